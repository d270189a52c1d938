"""Cluster administration over the admin user: form, check, inspect and reshard.

Functions take the ``LocalCluster`` they act on; they only use its ports, host,
credentials and ``node_client``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from watchlog.launcher.procs import LauncherError
from watchlog.launcher.redis_conf import ADMIN_USER

if TYPE_CHECKING:
    from watchlog.launcher.redis_cluster import LocalCluster

log = logging.getLogger(__name__)
SLOTS = 16384


@dataclass(frozen=True)
class NodeEntry:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str
    slots: int
    ranges: tuple[tuple[int, int], ...]


def parse_nodes(text: str) -> dict[int, NodeEntry]:
    """Parse CLUSTER NODES into entries by port."""
    entries = {}
    for line in text.strip().splitlines():
        parts = line.split()
        port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
        ranges = []
        for item in parts[8:]:
            if item.startswith("["):
                continue  # a slot being imported or migrated: not owned yet
            lo, _, hi = item.partition("-")
            ranges.append((int(lo), int(hi or lo)))
        slots = sum(hi - lo + 1 for lo, hi in ranges)
        entries[port] = NodeEntry(parts[0], port, frozenset(parts[2].split(",")), parts[3],
                                  slots, tuple(ranges))
    return entries


def _known_nodes(cluster: LocalCluster, port: int) -> tuple[int, bool]:
    """Return how many nodes ``nodes.conf`` lists, and whether any of them owns slots."""
    path = cluster.node_dir(port) / "nodes.conf"
    if not path.exists():
        return 0, False
    lines = [ln.split() for ln in path.read_text().splitlines() if ln and not ln.startswith("vars")]
    return len(lines), any(len(parts) > 8 for parts in lines)


def formed(cluster: LocalCluster) -> bool:
    """Return True when every node's ``nodes.conf`` already lists the whole cluster."""
    known = {p: _known_nodes(cluster, p) for p in cluster.ports}
    counts = {p: count for p, (count, _) in known.items()}
    if all(c == len(cluster.ports) and slots for c, slots in known.values()):
        return True
    if any(c > 1 for c in counts.values()):
        raise LauncherError(
            f"{cluster.root} holds a cluster of another shape ({counts}); start it with the "
            "same --nodes/--replicas, or remove that directory to begin anew")
    return False


def _split(masters: int) -> list[tuple[int, int]]:
    bounds = [round(i * SLOTS / masters) for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]


def create(cluster: LocalCluster, version: tuple[int, int]) -> None:
    """Assign slots to the masters, join every node, attach the replicas."""
    clients = [cluster.node_client(p) for p in cluster.ports]
    for i, client in enumerate(clients):
        # Distinct config epochs from the start, as redis-cli does: no collisions to resolve.
        client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
    for client, (lo, hi) in zip(clients, _split(cluster.masters), strict=False):
        if version >= (7, 0):
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        else:
            client.execute_command("CLUSTER", "ADDSLOTS", *range(lo, hi + 1))
    for port in cluster.ports[1:]:
        clients[0].execute_command("CLUSTER", "MEET", cluster.host, port)
    _wait_all_known(cluster, time.monotonic() + 15)
    ids = [c.execute_command("CLUSTER", "MYID") for c in clients]
    for k, client in enumerate(clients[cluster.masters:]):
        client.execute_command("CLUSTER", "REPLICATE", ids[k % cluster.masters])
    log.info("formed a cluster of %d masters and %d replicas", cluster.masters,
             len(cluster.ports) - cluster.masters)


def _wait_all_known(cluster: LocalCluster, deadline: float) -> None:
    want = len(cluster.ports)
    while time.monotonic() < deadline:
        views = [_nodes_of(cluster, p) for p in cluster.ports]
        if all(len(v) == want and not any("handshake" in e.flags for e in v.values())
               for v in views):
            return
        time.sleep(0.05)
    raise LauncherError("the redis nodes did not meet each other in time")


def _nodes_of(cluster: LocalCluster, port: int) -> dict[int, NodeEntry]:
    try:
        return parse_nodes(cluster.node_client(port, timeout=1.0).execute_command(
            "CLUSTER", "NODES"))
    except redis.RedisError:
        return {}


def problem(cluster: LocalCluster) -> str | None:
    """Return why the cluster is not fully serving yet, or None when it is."""
    for port in cluster.ports:
        try:
            client = cluster.node_client(port, timeout=1.0)
            info = client.execute_command("CLUSTER", "INFO")
        except redis.RedisError as e:
            return f"node {port}: {e}"
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        if fields.get("cluster_state") != "ok":
            return f"node {port}: cluster_state {fields.get('cluster_state')}"
        if fields.get("cluster_slots_ok") != str(SLOTS):
            return f"node {port}: {fields.get('cluster_slots_ok')} of {SLOTS} slots ok"
        if fields.get("cluster_known_nodes") != str(len(cluster.ports)):
            return f"node {port}: knows {fields.get('cluster_known_nodes')} nodes"
        repl = client.info("replication")
        if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
            return f"node {port}: replica not yet in sync with its master"
        masters = sum(1 for e in _nodes_of(cluster, port).values() if "master" in e.flags)
        if masters != cluster.masters:  # gossip has not spread every REPLICATE yet
            return f"node {port}: sees {masters} masters"
    return None


def wait_ok(cluster: LocalCluster, deadline: float) -> None:
    """Wait until every node says cluster_state:ok with all slots served."""
    reason = problem(cluster)
    while reason is not None:
        if time.monotonic() > deadline:
            raise LauncherError(f"redis cluster not ready in time: {reason}")
        time.sleep(0.1)
        reason = problem(cluster)


def load_functions(cluster: LocalCluster, deadline: float) -> None:
    """Load the store's function library on every master, as admin (the apps cannot)."""
    from watchlog.store.cluster import LIBRARY

    masters = [port for port, e in cluster_view(cluster).items()
               if "master" in e.flags and "fail" not in e.flags]
    for port in masters:
        while True:
            try:
                cluster.node_client(port).execute_command("FUNCTION", "LOAD", "REPLACE",
                                                          LIBRARY)
                break
            except redis.ResponseError as e:  # NOREPLICAS: a replica still syncing
                if "NOREPLICAS" not in str(e) or time.monotonic() > deadline:
                    raise LauncherError(f"redis node {port}: loading functions: {e}") from e
                time.sleep(0.1)


def cluster_view(cluster: LocalCluster) -> dict[int, NodeEntry]:
    """Return CLUSTER NODES as seen by the first node that answers."""
    for port in cluster.ports:
        view = _nodes_of(cluster, port)
        if view:
            return view
    return {}


def reshard(cluster: LocalCluster, source: int, target: int, slots: int | list[int]) -> int:
    """Move slots from ``source`` to ``target`` live, keys included; return the count.

    The standard protocol: IMPORTING on the target, MIGRATING on the source, MIGRATE the
    keys in batches (clients meanwhile get ASK and follow it), then SETSLOT NODE everywhere.
    """
    view = cluster_view(cluster)
    for port in (source, target):
        if port not in view or "master" not in view[port].flags or "fail" in view[port].flags:
            raise LauncherError(f"redis node {port} is not a live master of this cluster")
    src, dst = view[source], view[target]
    if isinstance(slots, int):
        owned = [s for lo, hi in src.ranges for s in range(lo, hi + 1)]
        slots = owned[:slots]
    masters = [p for p, e in view.items() if "master" in e.flags and "fail" not in e.flags]
    clients = {p: cluster.node_client(p, timeout=15.0) for p in {source, target, *masters}}
    for slot in slots:
        _move_slot(cluster, slot, (source, src.node_id), (target, dst.node_id), clients)
    log.info("moved %d slots from %d to %d", len(slots), source, target)
    return len(slots)


def _move_slot(cluster: LocalCluster, slot: int, src: tuple[int, str], dst: tuple[int, str],
               clients: dict[int, redis.Redis]) -> None:
    source, target = clients[src[0]], clients[dst[0]]
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src[1])
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst[1])
    password = cluster.credentials.redis_admin_password
    while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        source.execute_command("MIGRATE", cluster.host, dst[0], "", 0, 10000,
                               "AUTH2", ADMIN_USER, password, "KEYS", *keys)
    # The target first, so it owns the slot before the source starts redirecting there.
    for port in [dst[0], src[0], *(p for p in clients if p not in (src[0], dst[0]))]:
        try:
            clients[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst[1])
        except redis.RedisError as e:  # the others learn it by gossip anyway
            log.debug("setslot on %d: %s", port, e)
