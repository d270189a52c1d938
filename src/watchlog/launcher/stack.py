"""The whole system on one machine: Redis Cluster, APIs, clients and monitoring.

``up`` records every process in ``<state>/pids.json`` (also in the foreground, so
``status`` works from another terminal); ``down`` and ``status`` read it back.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from rich.console import Console
from rich.table import Table

from watchlog.core.credentials import FILENAME, Credentials, load_or_create
from watchlog.core.errors import LauncherError
from watchlog.core.process import UMASK, alive, umask
from watchlog.core.settings import Settings
from watchlog.launcher.observability import monitoring_services
from watchlog.launcher.procs import make_private, require_free, terminate
from watchlog.launcher.redis.cluster import LocalCluster
from watchlog.launcher.services import Ports, Service, app_services, base_env, client_services

log = logging.getLogger(__name__)
PIDS = "pids.json"
READY_TIMEOUT = 60.0  # seconds; the APIs start in ~2 s, Prometheus in ~1 s


class StatusRow(TypedDict):
    """One line of ``watchlog status`` (``role`` and ``slots`` for Redis nodes only)."""

    component: str
    address: str
    pid: int | None
    state: str
    role: NotRequired[str]
    slots: NotRequired[int]


class Stack:
    """Start, stop and inspect every component of a native deployment."""

    def __init__(self, settings: Settings, state_dir: Path, *, masters: int = 3,
                 replicas: int = 0, simulate: bool = True, monitoring: bool = True,
                 redis_port: int | None = 7000, ports: Ports | None = None,
                 console: Console | None = None, mask: int = UMASK) -> None:
        self.settings, self.state = settings, Path(state_dir).resolve()
        self.masters, self.replicas, self.redis_port = masters, replicas, redis_port
        self.simulate, self.monitoring = simulate, monitoring
        self.ports = ports or Ports(producer=settings.producer_port,
                                    consumer=settings.consumer_port)
        self.console = console or Console()
        self.mask = mask  # umask of every process started and every file written (0o077)
        self.services: list[Service] = []
        self.cluster: LocalCluster | None = None

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    def up(self, detach: bool = False) -> None:
        """Start everything; in the foreground, wait for Ctrl-C and stop it all.

        Everything under the state directory is private to its owner (``mask``): what is
        there already is tightened, what the launcher writes and every process it starts
        (Redis, the APIs, clients, Prometheus, the exporter) create files with that umask.
        """
        with umask(self.mask):
            self._up(detach)

    def _up(self, detach: bool) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        make_private(self.state, self.mask)
        running = [e["component"] for e in self._recorded()["services"] if alive(e.get("pid"))]
        if running:
            raise LauncherError(f"{', '.join(running)} already running from {self.state}; "
                                f"see `watchlog status`, or stop it with `watchlog down`")
        creds = load_or_create(self.state)
        self.console.print(f"credentials: [bold]{self.state / FILENAME}[/] (mode 0600)")
        # WATCHLOG_WAIT_REPLICAS=0 chooses availability: the masters' guard goes too.
        guard = 0 if self.settings.wait_replicas == 0 else None
        cluster = LocalCluster(self.state, host=self.settings.host, base_port=self.redis_port,
                               masters=self.masters, replicas=self.replicas, credentials=creds,
                               min_replicas=guard, mask=self.mask)
        self.cluster = cluster
        apps, clients, notes = self._plan(cluster, creds)
        for note in notes:
            self.console.print(f"[yellow]skipped[/] {note}")
        self._check_ports(cluster, apps + clients)
        try:
            cluster.start()
            self._start(apps)
            self._start(clients)
        except BaseException:
            self._stop_all()
            raise
        self._record()
        self.console.print(status_table(self.status()))
        self.console.print(f"reports: [bold]http://{self.settings.host}:{self.ports.consumer}"
                           f"/reports/[/] (sign in with WATCHLOG_READER_KEY from {FILENAME})",
                           soft_wrap=True)
        if not detach:
            self._wait_for_signal()
            self._stop_all()

    def _plan(self, cluster: LocalCluster,
              creds: Credentials) -> tuple[list[Service], list[Service], list[str]]:
        host = self.settings.host
        env = base_env(self.settings, creds, self.state, cluster.startup_urls, self.ports)
        if self.settings.wait_replicas == "auto":
            # Durable by default: with replicas, no write is acknowledged before one has it.
            env["WATCHLOG_WAIT_REPLICAS"] = str(min(1, cluster.replicas))
        apps = app_services(env, self.state, host, self.ports)
        clients: list[Service] = []
        notes: list[str] = []
        if self.simulate:
            clients, notes = client_services(env, self.state, host, self.ports)
        if self.monitoring:
            nodes = [f"{host}:{p}" for p in cluster.ports]
            monitors, skipped = monitoring_services(
                self.state, host, self.ports, creds, nodes, clients={s.name for s in clients})
            apps += monitors
            notes += skipped
        return apps, clients, notes

    def _check_ports(self, cluster: LocalCluster, services: list[Service]) -> None:
        """Fail before starting anything when a port is taken, naming it and its user."""
        cluster.check_ports()
        for s in services:
            host, _, port = s.address.rpartition(":")
            require_free(host, int(port), s.name)

    def _start(self, group: list[Service]) -> None:
        """Start a group of services together, then wait until each is ready."""
        for s in group:
            s.start(self.logs, self.mask)
            self.services.append(s)
        for s in group:
            s.wait_ready(READY_TIMEOUT, self.logs)
            log.info("%s ready on %s (pid %s)", s.name, s.address, s.pid)

    def _record(self) -> None:
        assert self.cluster is not None
        record = {"services": [{"component": s.name, "address": s.address, "pid": s.pid,
                                "ready": s.ready, "argv0": s.argv[0]} for s in self.services],
                  "redis": {"host": self.cluster.host, "ports": self.cluster.ports}}
        (self.state / PIDS).write_text(json.dumps(record, indent=2) + "\n")

    def _wait_for_signal(self) -> None:
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        self.console.print("running; press Ctrl-C to stop everything")
        reported: set[str] = set()
        try:
            while not stop.wait(2.0):
                for s in self.services:
                    if s.name not in reported and not alive(s.pid):
                        reported.add(s.name)
                        self.console.print(f"[red]{s.name} exited[/]; see {self.logs}")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop_all(self) -> None:
        """Stop the services in reverse order, then the Redis nodes."""
        self.console.print("stopping…")
        for s in reversed(self.services):
            s.stop()
        self.services.clear()
        if self.cluster is not None:
            self.cluster.stop()
        (self.state / PIDS).unlink(missing_ok=True)

    def down(self) -> list[str]:
        """Stop what ``pids.json`` lists and the Redis nodes; return what was stopped."""
        stopped = []
        for entry in reversed(self._recorded()["services"]):
            pid = entry.get("pid")
            if pid and alive(pid) and _is_ours(pid, entry.get("argv0", "")):
                terminate(pid)
                stopped.append(entry["component"])
        cluster = self._saved_cluster()
        if cluster is not None:
            running = [n.port for n in cluster.nodes() if n.pid]
            cluster.stop()
            stopped += [f"redis-{p}" for p in running]
        (self.state / PIDS).unlink(missing_ok=True)
        return stopped

    def status(self) -> list[StatusRow]:
        """Return ``{component, address, pid, state}`` for every known component."""
        rows: list[StatusRow] = []
        cluster = self.cluster or self._saved_cluster()
        if cluster is not None:
            for n in cluster.nodes():
                state = "running" if n.role != "down" else "unhealthy" if n.pid else "stopped"
                rows.append({"component": f"redis-{n.port}", "address": f"{cluster.host}:{n.port}",
                             "pid": n.pid, "state": state, "role": n.role, "slots": n.slots})
        for entry in self._recorded()["services"]:
            pid = entry.get("pid")
            probe = Service(entry["component"], [], entry["address"], entry["ready"])
            state = "stopped" if not alive(pid) else "running" if probe.is_ready() else "unhealthy"
            rows.append({"component": entry["component"], "address": entry["address"],
                         "pid": pid if alive(pid) else None, "state": state})
        return rows

    def _recorded(self) -> dict[str, Any]:
        path = self.state / PIDS
        return json.loads(path.read_text()) if path.exists() else {"services": []}

    def _saved_cluster(self) -> LocalCluster | None:
        if not (self.state / FILENAME).exists():
            return None
        return LocalCluster.from_state(self.state, load_or_create(self.state))

def status_table(rows: list[StatusRow]) -> Table:
    """Return the status rows as a rich table."""
    table = Table("component", "address", "pid", "state", title="watchlog")
    colour = {"running": "green", "unhealthy": "yellow", "stopped": "red"}
    for r in rows:
        table.add_row(r["component"], r["address"], str(r["pid"] or "-"),
                      f"[{colour[r['state']]}]{r['state']}[/]")
    return table


def _is_ours(pid: int, argv0: str) -> bool:
    """Return True when ``pid`` still runs ``argv0`` (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return Path(cmdline).name == Path(argv0).name or not argv0


__all__ = ["LauncherError", "Ports", "Stack", "status_table"]
