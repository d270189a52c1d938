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

from watchlog.core import keys
from watchlog.core.credentials import FILENAME, Credentials, load_or_create
from watchlog.core.errors import LauncherError
from watchlog.core.keys import SLOTS
from watchlog.core.process import UMASK, alive, umask
from watchlog.launcher.procs import (
    BUS_OFFSET,
    free_redis_ports,
    read_pid,
    require_free,
    spawn,
    wait_dead,
)
from watchlog.launcher.redis.conf import (
    ADMIN_USER,
    NodeConfig,
    find_redis_server,
    server_version,
    write_node_files,
)
from watchlog.launcher.redis.nodes import NodeEntry, parse_nodes, split_slots

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

    @classmethod
    def recorded(cls, state_dir: Path) -> LocalCluster:
        """Return the cluster ``watchlog up`` recorded in ``state_dir``; never create one."""
        # Never create credentials here: a missing file means there is no cluster to break.
        if not (state_dir / FILENAME).is_file():
            raise LauncherError(f"no credentials in {state_dir}; start with `watchlog up`")
        cluster = cls.from_state(state_dir, load_or_create(state_dir))
        if cluster is None:
            raise LauncherError(f"no Redis Cluster recorded in {state_dir}")
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
    def startup_urls(self) -> str:
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
        if not self.formed():
            self.create(version)
        self.wait_ok(deadline)
        self.load_functions(deadline)
        self._save_layout()
        log.info("redis cluster ready on %s in %.1f s", self.startup_urls,
                 time.monotonic() - started)

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
        view = self.cluster_view()
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

    def _known_nodes(self, port: int) -> tuple[int, bool]:
        """Return how many nodes ``nodes.conf`` lists, and whether any of them owns slots."""
        path = self.node_dir(port) / "nodes.conf"
        if not path.exists():
            return 0, False
        lines = [ln.split() for ln in path.read_text().splitlines()
                 if ln and not ln.startswith("vars")]
        return len(lines), any(len(parts) > 8 for parts in lines)

    def formed(self) -> bool:
        """Return True when every node's ``nodes.conf`` already lists the whole cluster."""
        known = {p: self._known_nodes(p) for p in self.ports}
        counts = {p: count for p, (count, _) in known.items()}
        if all(c == len(self.ports) and slots for c, slots in known.values()):
            return True
        if any(c > 1 for c in counts.values()):
            raise LauncherError(
                f"{self.root} holds a cluster of another shape ({counts}); start it with the "
                "same --nodes/--replicas, or remove that directory to begin anew")
        return False

    def create(self, version: tuple[int, int]) -> None:
        """Assign slots to the masters, join every node, attach the replicas."""
        clients = [self.node_client(p) for p in self.ports]
        for i, client in enumerate(clients):
            # Distinct config epochs from the start, as redis-cli does: no collisions to resolve.
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        for client, (lo, hi) in zip(clients, split_slots(self.masters), strict=False):
            if version >= (7, 0):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            else:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(lo, hi + 1))
        for port in self.ports[1:]:
            clients[0].execute_command("CLUSTER", "MEET", self.host, port)
        self._wait_all_known(time.monotonic() + 15)
        ids = [c.execute_command("CLUSTER", "MYID") for c in clients]
        for k, client in enumerate(clients[self.masters:]):
            client.execute_command("CLUSTER", "REPLICATE", ids[k % self.masters])
        log.info("formed a cluster of %d masters and %d replicas", self.masters,
                 len(self.ports) - self.masters)

    def _wait_all_known(self, deadline: float) -> None:
        want = len(self.ports)
        while time.monotonic() < deadline:
            views = [self._nodes_of(p) for p in self.ports]
            if all(len(v) == want and not any("handshake" in e.flags for e in v.values())
                   for v in views):
                return
            time.sleep(0.05)
        raise LauncherError("the redis nodes did not meet each other in time")

    def _nodes_of(self, port: int) -> dict[int, NodeEntry]:
        try:
            return parse_nodes(self.node_client(port, timeout=1.0).execute_command(
                "CLUSTER", "NODES"))
        except redis.RedisError:
            return {}

    def problem(self) -> str | None:
        """Return why the cluster is not fully serving yet, or None when it is."""
        for port in self.ports:
            try:
                client = self.node_client(port, timeout=1.0)
                info = client.execute_command("CLUSTER", "INFO")
            except redis.RedisError as e:
                return f"node {port}: {e}"
            fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
            if fields.get("cluster_state") != "ok":
                return f"node {port}: cluster_state {fields.get('cluster_state')}"
            if fields.get("cluster_slots_ok") != str(SLOTS):
                return f"node {port}: {fields.get('cluster_slots_ok')} of {SLOTS} slots ok"
            if fields.get("cluster_known_nodes") != str(len(self.ports)):
                return f"node {port}: knows {fields.get('cluster_known_nodes')} nodes"
            repl = client.info("replication")
            if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                return f"node {port}: replica not yet in sync with its master"
            masters = sum(1 for e in self._nodes_of(port).values() if "master" in e.flags)
            if masters != self.masters:  # gossip has not spread every REPLICATE yet
                return f"node {port}: sees {masters} masters"
        return None

    def wait_ok(self, deadline: float) -> None:
        """Wait until every node says cluster_state:ok with all slots served."""
        reason = self.problem()
        while reason is not None:
            if time.monotonic() > deadline:
                raise LauncherError(f"redis cluster not ready in time: {reason}")
            time.sleep(0.1)
            reason = self.problem()

    def load_functions(self, deadline: float) -> None:
        """Load the store's function library on every master, as admin (the apps cannot)."""
        from watchlog.store.cluster import LIBRARY

        masters = [port for port, e in self.cluster_view().items()
                   if "master" in e.flags and "fail" not in e.flags]
        for port in masters:
            while True:
                try:
                    self.node_client(port).execute_command("FUNCTION", "LOAD", "REPLACE",
                                                           LIBRARY)
                    break
                except redis.ResponseError as e:  # NOREPLICAS: a replica still syncing
                    if "NOREPLICAS" not in str(e) or time.monotonic() > deadline:
                        raise LauncherError(f"redis node {port}: loading functions: {e}") from e
                    time.sleep(0.1)

    def cluster_view(self) -> dict[int, NodeEntry]:
        """Return CLUSTER NODES as seen by the first node that answers."""
        for port in self.ports:
            view = self._nodes_of(port)
            if view:
                return view
        return {}

    def reshard(self, source: int, target: int, slots: int | list[int]) -> int:
        """Move slots from ``source`` to ``target`` live, keys included; return the count.

        The standard protocol: IMPORTING on the target, MIGRATING on the source, MIGRATE the
        keys in batches (clients meanwhile get ASK and follow it), then SETSLOT NODE everywhere.
        """
        view = self.cluster_view()
        for port in (source, target):
            if port not in view or "master" not in view[port].flags or "fail" in view[port].flags:
                raise LauncherError(f"redis node {port} is not a live master of this cluster")
        src, dst = view[source], view[target]
        if isinstance(slots, int):
            owned = [s for lo, hi in src.ranges for s in range(lo, hi + 1)]
            slots = owned[:slots]
        masters = [p for p, e in view.items() if "master" in e.flags and "fail" not in e.flags]
        clients = {p: self.node_client(p, timeout=15.0) for p in {source, target, *masters}}
        for slot in slots:
            self._move_slot(slot, (source, src.node_id), (target, dst.node_id), clients)
        self.wait_settled(slots, dst.node_id, time.monotonic() + 15)
        log.info("moved %d slots from %d to %d", len(slots), source, target)
        return len(slots)

    def wait_settled(self, slots: list[int], owner: str, deadline: float) -> None:
        """Wait until every live node names ``owner`` for each slot, none half-moved.

        Return only then: a slot moved again before the cluster agreed on its last move can be
        taken back by a stale claim with a higher config epoch, and its keys deleted by the
        node that loses it (observed moving 8 slots back and forth ~60 times in 4 s).
        """
        unsettled: list[str] = []
        while True:
            unsettled = []
            for port in self.ports:
                try:
                    text = self.node_client(port, timeout=1.0).execute_command("CLUSTER", "NODES")
                except redis.RedisError:
                    continue  # a node down learns the owners when it comes back
                if "[" in text:
                    unsettled.append(f"node {port} has a slot half-moved")
                    continue
                owners = {e.node_id: e.ranges for e in parse_nodes(text).values()}
                if not all(any(lo <= s <= hi for lo, hi in owners.get(owner, ())) for s in slots):
                    unsettled.append(f"node {port} does not name the new owner yet")
            if not unsettled:
                return
            if time.monotonic() > deadline:
                raise LauncherError(f"the slots moved, but the cluster did not agree in time: "
                                    f"{'; '.join(unsettled)}")
            time.sleep(0.05)

    def _move_slot(self, slot: int, src: tuple[int, str], dst: tuple[int, str],
                   clients: dict[int, redis.Redis]) -> None:
        source, target = clients[src[0]], clients[dst[0]]
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src[1])
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst[1])
        password = self.credentials.redis_admin_password
        while batch := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            source.execute_command("MIGRATE", self.host, dst[0], "", 0, 10000,
                                   "AUTH2", ADMIN_USER, password, "KEYS", *batch)
        # The target first, so it owns the slot before the source starts redirecting there.
        for port in [dst[0], src[0], *(p for p in clients if p not in (src[0], dst[0]))]:
            try:
                clients[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst[1])
            except redis.RedisError as e:  # the others learn it by gossip anyway
                log.debug("setslot on %d: %s", port, e)

    def node_rows(self) -> list[dict[str, Any]]:
        """Return one row per node, with the partitions its slots hold and its master."""
        view = self.cluster_view()
        port_of = {e.node_id: port for port, e in view.items()}
        rows = []
        for info in self.nodes():
            entry = view.get(info.port)
            ranges = entry.ranges if entry else ()
            parts = sum(1 for p in range(keys.PARTITIONS)
                        if any(lo <= keys.partition_slot(p) <= hi for lo, hi in ranges))
            master = port_of.get(entry.master_id) if entry and entry.master_id != "-" else None
            rows.append({"port": info.port, "pid": info.pid, "role": info.role,
                         "slots": info.slots, "partitions": parts,
                         "replica_of": master if info.role == "replica" else None})
        return rows

    def partition_slots(self, source: int, count: int) -> list[int]:
        """Return the slots of the first ``count`` partitions that ``source`` owns."""
        entry = self.cluster_view().get(source)
        if entry is None or "master" not in entry.flags:
            raise LauncherError(f"redis node {source} is not a live master")
        owned = [keys.partition_slot(p) for p in range(keys.PARTITIONS)
                 if any(lo <= keys.partition_slot(p) <= hi for lo, hi in entry.ranges)]
        if not owned:
            raise LauncherError(f"redis node {source} holds no partition")
        return owned[:count]
