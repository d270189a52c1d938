"""The processes of a native deployment besides Redis: the apps, clients and monitoring.

Each is a ``Service``: a command line, an environment, an address and a readiness check.
Which ones run depends on the binaries installed; a missing one is reported, not fatal.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import watchlog
from watchlog.core.credentials import Credentials
from watchlog.core.errors import LauncherError
from watchlog.core.process import UMASK, alive
from watchlog.core.settings import Settings
from watchlog.launcher.procs import spawn, tcp_open, terminate

log = logging.getLogger(__name__)

# Binary names to try, and where to get them when none is found.
BINARIES = {
    "redis-exporter": (("prometheus-redis-exporter", "redis_exporter"),
                       "apt-get install prometheus-redis-exporter"),
    "prometheus": (("prometheus",), "apt-get install prometheus"),
    "alertmanager": (("prometheus-alertmanager", "alertmanager"),
                     "apt-get install prometheus-alertmanager"),
    "grafana": (("grafana-server", "grafana"), "not packaged in Debian; see grafana.com"),
}


# The extractor `watchlog up` runs; no README example uses this name (an example that
# shared it would split the running extractor's stream).
BUILTIN_EXTRACTOR = "archive"


@dataclass(frozen=True)
class Ports:
    """Where each component listens (Redis ports belong to ``LocalCluster``)."""

    producer: int = 5001
    consumer: int = 5002
    simulator: int = 9101
    extractor: int = 9102
    exporter: int = 9121
    prometheus: int = 9090
    grafana: int = 3000
    alertmanager: int = 9093
    alert_sink: int = 9095


@dataclass
class Service:
    """One supervised process."""

    name: str
    argv: list[str]
    address: str  # host:port
    ready: str  # "http://…" (200 means ready) or "tcp"
    env: dict[str, str] = field(repr=False, default_factory=dict)
    pid: int | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def start(self, logs: Path, mask: int = UMASK) -> None:
        """Spawn the process (umask ``mask``), output appended to ``<logs>/<name>.log``."""
        self._proc = spawn(self.argv, logs / f"{self.name}.log", env=self.env, mask=mask)
        self.pid = self._proc.pid

    def is_ready(self) -> bool:
        """Return True when the readiness check passes."""
        if self.ready == "tcp":
            host, _, port = self.address.rpartition(":")
            return tcp_open(host, int(port))
        try:
            with urllib.request.urlopen(self.ready, timeout=1.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout: float, logs: Path) -> None:
        """Wait until ready; raise with the log's tail when it exits or times out."""
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            proc = self._proc
            if proc is not None and proc.poll() is not None:
                raise LauncherError(f"{self.name} exited ({proc.returncode}):\n"
                                    f"{tail(logs / f'{self.name}.log')}")
            if time.monotonic() > deadline:
                raise LauncherError(f"{self.name} not ready on {self.address} after "
                                    f"{timeout:.0f} s; see {logs / f'{self.name}.log'}")
            time.sleep(0.1)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the service's process group; SIGKILL after ``grace`` seconds."""
        if self.pid and alive(self.pid):
            terminate(self.pid, grace)
        if self._proc is not None:
            self._proc.poll()  # reap it, so no zombie or ResourceWarning is left


def tail(path: Path, lines: int = 12) -> str:
    """Return the last lines of a log file."""
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def find_binary(component: str) -> str | None:
    """Return the binary of ``component`` on PATH, or None (after saying where to get it)."""
    names, hint = BINARIES[component]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    log.debug("%s not found (%s): skipped", component, hint)
    return None


def missing_hint(component: str) -> str:
    """Return how to install ``component``."""
    names, hint = BINARIES[component]
    return f"{component}: no {' or '.join(names)} on PATH ({hint})"


def base_env(settings: Settings, creds: Credentials, state: Path, redis_urls: str,
             ports: Ports) -> dict[str, str]:
    """Return the environment of every watchlog process: settings, then credentials."""
    env = dict(os.environ)
    for f in dataclasses.fields(settings):
        env["WATCHLOG_" + f.name.upper()] = str(getattr(settings, f.name))
    host = settings.host
    # The launcher's Redis and tokens win over any inherited ones: they are the cluster's.
    env.update(creds.app_env())
    env.update({
        "WATCHLOG_REDIS_URL": redis_urls,
        "WATCHLOG_PRODUCER_PORT": str(ports.producer),
        "WATCHLOG_CONSUMER_PORT": str(ports.consumer),
        "WATCHLOG_PRODUCER_URL": f"http://{host}:{ports.producer}",
        "WATCHLOG_CONSUMER_URL": f"http://{host}:{ports.consumer}",
        "WATCHLOG_STATE_DIR": str(state),
        "WATCHLOG_CREDENTIALS_FILE": str(state / "credentials.env"),
        # The children import the same watchlog as we do, installed or from a checkout.
        "PYTHONPATH": os.pathsep.join(filter(None, [
            str(Path(watchlog.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])),
    })
    return env


def metrics_dir(state: Path, name: str) -> str:
    """Return an empty ``PROMETHEUS_MULTIPROC_DIR`` for ``name`` (wiped: stale files lie)."""
    path = state / "metrics" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


# Secrets (and the device-token file) a launched process may find in its environment; each
# gets only those it checks or sends (docs/security.md, "Secrets"). The Redis admin and
# exporter passwords go to no watchlog process: the launcher uses them itself.
SCOPED = ("WATCHLOG_INGEST_TOKEN", "WATCHLOG_READER_KEY", "WATCHLOG_ADMIN_KEY",
          "WATCHLOG_REDIS_PASSWORD", "WATCHLOG_REDIS_ADMIN_PASSWORD",
          "WATCHLOG_REDIS_EXPORTER_PASSWORD", "WATCHLOG_DEVICE_TOKENS_FILE",
          "WATCHLOG_SESSION_SECRET")
NEEDS = {
    "producer": {"WATCHLOG_INGEST_TOKEN", "WATCHLOG_DEVICE_TOKENS_FILE", "WATCHLOG_ADMIN_KEY",
                 "WATCHLOG_REDIS_PASSWORD"},
    "consumer": {"WATCHLOG_READER_KEY", "WATCHLOG_ADMIN_KEY", "WATCHLOG_REDIS_PASSWORD",
                 "WATCHLOG_SESSION_SECRET"},
    "simulator": {"WATCHLOG_INGEST_TOKEN"},
    "extractor": {"WATCHLOG_READER_KEY"},
}


def scoped_env(env: dict[str, str], name: str) -> dict[str, str]:
    """Return ``env`` without the secrets process ``name`` does not check or send."""
    keep = NEEDS.get(name, set())

    def drop(var: str) -> bool:
        base = var.removesuffix("_FILE") if var != "WATCHLOG_DEVICE_TOKENS_FILE" else var
        return base in SCOPED and base not in keep

    return {k: v for k, v in env.items() if not drop(k)}


def watchlog_service(name: str, args: list[str], env: dict[str, str], state: Path,
                     address: str, ready: str) -> Service:
    """Return a ``python -m watchlog …`` service with its own metrics directory."""
    env = {**scoped_env(env, name), "PROMETHEUS_MULTIPROC_DIR": metrics_dir(state, name)}
    return Service(name, [sys.executable, "-m", "watchlog", *args], address, ready, env)


def app_services(env: dict[str, str], state: Path, host: str, ports: Ports) -> list[Service]:
    """Return the producer and consumer APIs."""
    return [
        watchlog_service(name, ["serve", name], env, state, f"{host}:{port}",
                         f"http://{host}:{port}/ready")
        for name, port in (("producer", ports.producer), ("consumer", ports.consumer))
    ]


def client_services(env: dict[str, str], state: Path, host: str,
                    ports: Ports) -> tuple[list[Service], list[str]]:
    """Return the simulator and the extractor (those installed), and notes on the others."""
    clients = {
        "simulator": ("simulate", ["--rate", "5", "--quiet", "--metrics-port",
                                   str(ports.simulator), "--metrics-host", host],
                      ports.simulator),
        "extractor": ("extract", ["--name", BUILTIN_EXTRACTOR, "--follow", "-o",
                                  str(state / "extracts"), "--metrics-port",
                                  str(ports.extractor), "--metrics-host", host],
                      ports.extractor),
    }
    services: list[Service] = []
    notes: list[str] = []  # every client ships in every install: nothing to note today
    for name, (command, args, port) in clients.items():
        services.append(watchlog_service(name, [command, *args], env, state,
                                         f"{host}:{port}", "tcp"))
    return services, notes
