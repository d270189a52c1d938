"""A local Redis Cluster: one ``redis-server`` process per node, its data in the state dir.

The cluster is formed from Python (CLUSTER ADDSLOTSRANGE / MEET / REPLICATE as the admin
user) rather than with ``redis-cli --cluster create``: no password on a command line, and
no dependency on a redis-cli matching the server.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from watchlog.core.credentials import Credentials
from watchlog.launcher import redis_admin as ra
from watchlog.launcher.procs import (
    BUS_OFFSET,
    UMASK,
    LauncherError,
    alive,
    free_redis_ports,
    read_pid,
    require_free,
    spawn,
    umask,
    wait_dead,
)
from watchlog.launcher.redis_conf import (
    ADMIN_USER,
    NodeConfig,
    find_redis_server,
    server_version,
    write_node_files,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeInfo:
    """One node as the cluster sees it."""

    port: int
    pid: int | None
    role: str  # "master" | "replica" | "down"
    slots: int


class LocalCluster:
    """Start, stop, break and reshard a Redis Cluster of local processes."""

    def __init__(self, state_dir: Path, *, host: str = "127.0.0.1", base_port: int | None = 7000,
                 masters: int = 3, replicas: int = 0, credentials: Credentials,
                 redis_server: str | None = None, node_timeout_ms: int = 3000,
                 maxmemory: str = "0", min_replicas: int | None = None,
                 mask: int = UMASK) -> None:
        if masters < 1 or replicas < 0:
            raise LauncherError("a cluster needs at least one master and no negative replicas")
        self.root = Path(state_dir) / "redis"
        self.host, self.masters, self.replicas = host, masters, replicas
        self.credentials = credentials
        self._binary = redis_server
        self._timeout_ms, self._maxmemory = node_timeout_ms, maxmemory
        # Masters refuse writes with no live replica (min-replicas-to-write) when the
        # cluster has replicas, unless the apps are told to acknowledge without them.
        self.min_replicas = min(1, replicas) if min_replicas is None else min_replicas
        self.mask = mask  # umask of the nodes and of the files written for them
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self.ports = self._choose_ports(base_port)

    @classmethod
    def from_state(cls, state_dir: Path, credentials: Credentials) -> LocalCluster | None:
        """Return the cluster last started in ``state_dir``, or None."""
        path = Path(state_dir) / "redis" / "cluster.json"
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        cluster = cls(state_dir, host=saved["host"], base_port=saved["ports"][0],
                      masters=saved["masters"], replicas=saved["replicas"],
                      credentials=credentials, min_replicas=saved.get("min_replicas"))
        cluster.ports = list(saved["ports"])
        return cluster

    def _choose_ports(self, base_port: int | None) -> list[int]:
        count = self.masters * (1 + self.replicas)
        if base_port is not None:
            return [base_port + i for i in range(count)]
        saved = self.root / "cluster.json"
        if saved.exists():  # free ports picked earlier: the data dirs and nodes.conf use them
            ports = json.loads(saved.read_text()).get("ports", [])
            if len(ports) == count:
                return list(ports)
        return free_redis_ports(self.host, count)

    # -- addresses and clients ------------------------------------------------------------

    @property
    def url(self) -> str:
        """Return the URL of the first node."""
        return f"redis://{self.host}:{self.ports[0]}"

    @property
    def seed_urls(self) -> str:
        """Return every node's URL, comma-separated (for ``WATCHLOG_REDIS_URL``)."""
        return ",".join(f"redis://{self.host}:{p}" for p in self.ports)

    def node_dir(self, port: int) -> Path:
        """Return the data directory of the node on ``port``."""
        return self.root / str(port)

    def node_client(self, port: int, timeout: float = 2.0) -> redis.Redis:
        """Return a plain client of one node, logged in as admin."""
        # No silent retries: the launcher polls on its own, and a SHUTDOWN must not be resent.
        return redis.Redis(self.host, port, username=ADMIN_USER,
                           password=self.credentials.redis_admin_password,
                           socket_timeout=timeout, socket_connect_timeout=timeout,
                           decode_responses=True, retry=Retry(NoBackoff(), 0))

    def admin_client(self, **kwargs: Any) -> RedisCluster:
        """Return a cluster client logged in as admin (all commands, all keys)."""
        kwargs.setdefault("socket_timeout", 2.0)
        return RedisCluster(startup_nodes=[ClusterNode(self.host, p) for p in self.ports],
                            username=ADMIN_USER, password=self.credentials.redis_admin_password,
                            decode_responses=True, **kwargs)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start every node; form the cluster unless its ``nodes.conf`` already do."""
        started = time.monotonic()
        binary = find_redis_server(self._binary)
        version = server_version(binary)
        if version < (7, 0):
            raise LauncherError(f"{binary} is Redis {version[0]}.{version[1]}: watchlog needs "
                                "7.0 or later (its store is a Redis function library)")
        todo = self.check_ports()
        for port in todo:
            self._spawn(port, binary, version)
        deadline = started + timeout
        for port in self.ports:
            self._wait_ping(port, deadline)
        if not ra.formed(self):
            ra.create(self, version)
        ra.wait_ok(self, deadline)
        ra.load_functions(self, deadline)
        self._save_layout()
        log.info("redis cluster ready on %s in %.1f s", self.seed_urls, time.monotonic() - started)

    def check_ports(self) -> list[int]:
        """Return the ports of nodes not running; raise if one of them, or its bus, is taken."""
        todo = [p for p in self.ports if not self._running(p)]
        for port in todo:
            require_free(self.host, port, f"redis node {port}")
            require_free(self.host, port + BUS_OFFSET, f"the cluster bus of redis node {port}")
        return todo

    def _running(self, port: int) -> bool:
        pid = read_pid(self.node_dir(port) / "redis.pid")
        if pid is None:
            return False
        try:
            return bool(self.node_client(port, timeout=1.0).ping())
        except redis.RedisError:
            return False

    def _spawn(self, port: int, binary: str, version: tuple[int, int]) -> None:
        node = NodeConfig(self.host, port, self.node_dir(port).resolve(),
                          node_timeout_ms=self._timeout_ms, maxmemory=self._maxmemory,
                          min_replicas=self.min_replicas)
        with umask(self.mask):
            conf = write_node_files(node, self.credentials, version)
        self._procs[port] = spawn([binary, str(conf)], node.directory / "redis.log",
                                  cwd=node.directory, mask=self.mask)

    def _wait_ping(self, port: int, deadline: float) -> None:
        client = self.node_client(port, timeout=1.0)
        while True:
            proc = self._procs.get(port)
            if proc is not None and proc.poll() is not None:
                raise LauncherError(f"redis node {port} exited at start:\n{self._log_tail(port)}")
            try:
                if client.ping():
                    return
            except redis.BusyLoadingError:
                pass  # replaying its AOF: wait
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise LauncherError(f"redis node {port} did not answer in time")
            time.sleep(0.05)

    def _log_tail(self, port: int, lines: int = 8) -> str:
        path = self.node_dir(port) / "redis.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _save_layout(self) -> None:
        layout = {"host": self.host, "ports": self.ports, "masters": self.masters,
                  "replicas": self.replicas, "min_replicas": self.min_replicas}
        with umask(self.mask):
            (self.root / "cluster.json").write_text(json.dumps(layout, indent=2) + "\n")

    def pid(self, port: int) -> int | None:
        """Return the pid of the node on ``port`` when it runs."""
        return read_pid(self.node_dir(port) / "redis.pid")

    def stop(self, timeout: float = 15.0) -> None:
        """SHUTDOWN every node (AOF flushed), SIGTERM those that do not answer; wait."""
        pids = {p: self.pid(p) for p in self.ports}
        for port, pid in pids.items():
            if pid:
                self._shutdown(port, pid)
        for port, pid in pids.items():
            if pid and not self._wait_exit(port, pid, timeout):
                self._signal(pid, signal.SIGKILL)
                self._wait_exit(port, pid, 5.0)

    def _shutdown(self, port: int, pid: int) -> None:
        try:
            self.node_client(port, timeout=1.0).execute_command("SHUTDOWN")
        except redis.ConnectionError:
            pass  # the node closed the connection: it is going down
        except redis.RedisError:
            self._signal(pid, signal.SIGTERM)
        # A paused (SIGSTOPped) node only acts on SIGTERM once continued.
        self._signal(pid, signal.SIGCONT)

    def _wait_exit(self, port: int, pid: int, timeout: float) -> bool:
        proc = self._procs.get(port)
        if proc is not None and proc.pid == pid:
            try:
                proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        return wait_dead(pid, timeout)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    # -- chaos ----------------------------------------------------------------------------

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (a crash: no AOF flush, no goodbye)."""
        pid = self.pid(port)
        if pid:
            self._signal(pid, signal.SIGKILL)
            self._wait_exit(port, pid, 5.0)

    def start_node(self, port: int, timeout: float = 15.0) -> None:
        """Start one stopped node again, with its data; wait until it answers."""
        if self._running(port):
            return
        require_free(self.host, port, f"redis node {port}")
        binary = find_redis_server(self._binary)
        self._spawn(port, binary, server_version(binary))
        self._wait_ping(port, time.monotonic() + timeout)

    def pause(self, port: int, seconds: float) -> threading.Timer:
        """Freeze the node on ``port`` (SIGSTOP) for ``seconds``, then continue it."""
        pid = self.pid(port)
        if not pid:
            raise LauncherError(f"redis node {port} is not running")
        self._signal(pid, signal.SIGSTOP)
        timer = threading.Timer(seconds, self._signal, (pid, signal.SIGCONT))
        timer.daemon = True
        timer.start()
        return timer

    def nodes(self) -> list[NodeInfo]:
        """Return each node's pid, role and slot count, as the live nodes see them."""
        view = ra.cluster_view(self)
        infos = []
        for port in self.ports:
            pid = self.pid(port)
            entry = view.get(port)
            if not alive(pid) or entry is None or "fail" in entry.flags:
                infos.append(NodeInfo(port, pid, "down", entry.slots if entry else 0))
            else:
                role = "master" if "master" in entry.flags else "replica"
                infos.append(NodeInfo(port, pid, role, entry.slots))
        return infos

    def reshard(self, source_port: int, target_port: int, slots: int | list[int]) -> int:
        """Move slots (the ``slots`` lowest of the source, or a list) live; return the count."""
        return ra.reshard(self, source_port, target_port, slots)
