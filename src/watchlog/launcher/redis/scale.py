"""Grow, shrink and rebalance a running Redis Cluster by whole partitions.

The store's 64 partitions each own 256 slots (``p × 256`` … ``p × 256 + 255``); every key
of partition *p* lives in slot ``p × 256``. A *move* hands all 256 slots of a partition to
one master, live: IMPORTING on the target, MIGRATING on the source, the keys MIGRATEd in
batches (clients meanwhile get ASK or TRYAGAIN, which the store follows or retries), the
target's replicas confirm the keys (``WAIT``), then SETSLOT NODE on the target, the source
and every other master. The next move starts only once every node names the new owner and
no slot is half-moved (Redis 7.0 can lose a slot moved again before the cluster agreed on
its last move: docs/chaos.md).

Nothing is kept in a file of its own: a plan is computed from CLUSTER NODES each time, and
a run killed half-way (a slot left MIGRATING/IMPORTING) is finished first by the next run,
from the nodes' own migrating/importing states. SIGINT and SIGTERM do not stop a run
mid-partition (``deferred_signals``): the partition being moved is finished first.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
import yaml

from watchlog.core import keys
from watchlog.core.errors import ScaleError
from watchlog.core.process import handling_signals

if TYPE_CHECKING:
    from watchlog.launcher.redis.cluster import LocalCluster

log = logging.getLogger(__name__)

SLOTS = keys.SLOTS
PARTITIONS = keys.PARTITIONS
PARTITION_SLOTS = SLOTS // PARTITIONS  # 256
MIGRATE_BATCH = 100  # keys per MIGRATE
SETTLE_TIMEOUT_S = 30.0


class Refused(ScaleError):
    """Refused before anything changed: running the same command again does the same."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the run stopped at a partition boundary, none half-moved."""


# Off only for a test's negative control (the signal then stops the run wherever it is).
DEFER_SIGNALS = True
_signalled: list[int] = []


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into a request that ``checkpoint`` honours between partitions.

    A partition stopped mid-move stays MIGRATING on its source and IMPORTING on its target,
    its keys split, and every call to it gets TRYAGAIN/ASK (a 503) until a run finishes it;
    and a KeyboardInterrupt raised inside redis-py can be swallowed by a ``__del__``. So the
    handler only takes note; the run finishes the partition it moves (its slots, the
    replicas' WAIT, every node naming the owner) and stops at the next ``checkpoint``.
    """
    if not DEFER_SIGNALS:
        yield
        return

    def note(signum: int, _frame: object) -> None:
        _signalled.append(signum)

    try:
        with handling_signals(note):
            yield
    finally:
        _signalled.clear()


def checkpoint() -> None:
    """Stop here (``Interrupted``) if a signal arrived: no partition is half-moved now."""
    if _signalled:
        raise Interrupted(signal.Signals(_signalled[0]).name)


def partition_of_slot(slot: int) -> int:
    return slot // PARTITION_SLOTS


def partition_range(p: int) -> range:
    return range(p * PARTITION_SLOTS, (p + 1) * PARTITION_SLOTS)


@dataclass(frozen=True)
class Node:
    """One line of CLUSTER NODES, keyed by its announced ``host:port``."""

    node_id: str
    addr: str
    flags: frozenset[str]
    master_id: str
    link: str
    slots: frozenset[int]
    migrating: dict[int, str] = field(default_factory=dict)  # slot -> target id
    importing: dict[int, str] = field(default_factory=dict)  # slot -> source id

    @property
    def is_master(self) -> bool:
        return "master" in self.flags and "fail" not in self.flags and "noaddr" not in self.flags

    @property
    def host(self) -> str:
        return self.addr.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])


def parse_nodes(text: str) -> dict[str, Node]:
    """Parse CLUSTER NODES (with the migrating/importing marks of ``myself``) by node id."""
    nodes = {}
    for line in text.strip().splitlines():
        parts = line.split()
        addr = parts[1].split("@")[0]
        owned: set[int] = set()
        migrating: dict[int, str] = {}
        importing: dict[int, str] = {}
        for item in parts[8:]:
            if item.startswith("["):
                slot, arrow, other = item.strip("[]").partition("->-")
                if arrow:
                    migrating[int(slot)] = other
                else:
                    slot, _, other = item.strip("[]").partition("-<-")
                    importing[int(slot)] = other
                continue
            lo, _, hi = item.partition("-")
            owned.update(range(int(lo), int(hi or lo) + 1))
        nodes[parts[0]] = Node(parts[0], addr, frozenset(parts[2].split(",")), parts[3],
                               parts[7], frozenset(owned), migrating, importing)
    return nodes


class Admin:
    """Admin connections to every node of a cluster, found from startup node addresses."""

    def __init__(self, startup_nodes: list[str], username: str, password: str,
                 timeout: float = 15.0) -> None:
        self.startup_nodes = list(startup_nodes)
        self.username, self.password, self.timeout = username, password, timeout
        self._clients: dict[str, redis.Redis] = {}

    def client(self, addr: str) -> redis.Redis:
        if addr not in self._clients:
            host, _, port = addr.rpartition(":")
            self._clients[addr] = redis.Redis(
                host, int(port), username=self.username, password=self.password,
                socket_timeout=self.timeout, socket_connect_timeout=min(self.timeout, 3.0),
                decode_responses=True)
        return self._clients[addr]

    def nodes_of(self, addr: str) -> dict[str, Node]:
        """CLUSTER NODES as ``addr`` sees it, or {} when it does not answer."""
        try:
            return parse_nodes(self.client(addr).execute_command("CLUSTER", "NODES"))
        except redis.RedisError:
            return {}

    def view(self) -> dict[str, Node]:
        """CLUSTER NODES from the first startup node (or node it knows) that answers."""
        tried: list[str] = []
        for addr in self.startup_nodes:
            tried.append(addr)
            nodes = self.nodes_of(addr)
            if nodes:
                return nodes
        raise ScaleError(f"no node of the cluster answers ({', '.join(tried)})")

    def live(self, view: dict[str, Node]) -> list[Node]:
        """Every node of ``view`` not flagged failed."""
        return [n for n in view.values()
                if "fail" not in n.flags and "noaddr" not in n.flags and "handshake" not in n.flags]


# -- planning ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """Give every slot of ``partition`` to ``target``; ``sources`` are its current owners."""

    partition: int
    target: str  # node id
    sources: tuple[str, ...]  # node ids owning some of its slots now
    slots: int  # how many of its slots are elsewhere
    whole: bool  # the slot holding the partition's keys moves too (not only strays)


@dataclass
class Plan:
    moves: list[Move]
    before: dict[str, int]  # partitions per master (by id), now
    after: dict[str, int]  # partitions per master when done
    names: dict[str, str]  # node id -> address


def owners(view: dict[str, Node]) -> dict[int, str]:
    """Slot -> owning master id, from a view."""
    owner: dict[int, str] = {}
    for n in view.values():
        if "master" in n.flags:
            for s in n.slots:
                owner[s] = n.node_id
    return owner


def plan(view: dict[str, Node], keep: list[str]) -> Plan:
    """Plan moves so that the masters ``keep`` (ids) each hold 64/len(keep) partitions (±1).

    A partition belongs to the master owning its key slot (``p × 256``); a partition whose
    other slots are elsewhere (a layout not aligned on partitions, or a run interrupted
    half-way) gets them back. Masters not in ``keep`` give all theirs away.
    """
    if not keep:
        raise Refused("no master would be left to hold the partitions")
    owner = owners(view)
    missing = [s for s in range(SLOTS) if s not in owner]
    if missing:
        raise ScaleError(f"{len(missing)} slots are served by no master (first {missing[0]}); "
                         "the cluster must serve every slot before partitions move")
    holder = {p: owner[p * PARTITION_SLOTS] for p in range(PARTITIONS)}
    masters = sorted({*holder.values(), *keep}, key=lambda i: view[i].port)
    count = {m: 0 for m in masters}
    for m in holder.values():
        count[m] += 1
    base, extra = divmod(PARTITIONS, len(keep))
    # The masters holding most now keep the extra partition: fewer moves.
    ranked = sorted(keep, key=lambda m: (-count[m], view[m].port))
    want = {m: 0 for m in masters}
    for i, m in enumerate(ranked):
        want[m] = base + (1 if i < extra else 0)
    target = dict(holder)
    surplus = {m: count[m] - want[m] for m in masters}
    for p in sorted(holder, reverse=True):  # give away the highest partitions first
        m = holder[p]
        if surplus[m] <= 0:
            continue
        receiver = min((r for r in masters if surplus[r] < 0),
                       key=lambda r: (surplus[r], view[r].port))
        target[p] = receiver
        surplus[m] -= 1
        surplus[receiver] += 1
    moves = []
    for p in range(PARTITIONS):
        away = [s for s in partition_range(p) if owner[s] != target[p]]
        if away:
            sources = tuple(sorted({owner[s] for s in away}, key=lambda i: view[i].port))
            moves.append(Move(p, target[p], sources, len(away), holder[p] != target[p]))
    after = {m: 0 for m in masters}
    for m in target.values():
        after[m] += 1
    return Plan(moves, count, after, {i: n.addr for i, n in view.items()})


def describe(p: Plan) -> list[str]:
    """The plan as lines a person reads (what ``--dry-run`` prints)."""
    lines = []
    for mv in p.moves:
        src = ", ".join(p.names[s] for s in mv.sources)
        what = "partition" if mv.whole else "stray slots of partition"
        lines.append(f"move {what} {mv.partition:2d} ({mv.slots} slots): {src} -> "
                     f"{p.names[mv.target]}")
    shares = ", ".join(f"{p.names[m]} {p.before.get(m, 0)} -> {n}" for m, n in p.after.items())
    lines.append(f"partitions per master: {shares}")
    lines.append(f"{sum(1 for m in p.moves if m.whole)} partitions to move"
                 + (f", {sum(1 for m in p.moves if not m.whole)} partitions with stray slots"
                    if any(not m.whole for m in p.moves) else ""))
    return lines


# -- moving -----------------------------------------------------------------------------


Progress = Callable[[str], None]


class Mover:
    """Move slots live, wait for agreement, finish what an interrupted run left half-moved."""

    def __init__(self, admin: Admin, progress: Progress = lambda _: None,
                 wait_replicas: bool = True) -> None:
        self.admin = admin
        self.progress = progress
        # The moved keys are on the target's replicas before the target owns them; off
        # only for the negative control of the tests.
        self.wait_replicas = wait_replicas
        self.keys_moved = 0

    def replicas_of(self, view: dict[str, Node], master: str) -> int:
        return sum(1 for n in view.values() if n.master_id == master and "fail" not in n.flags)

    def agreed(self, view: dict[str, Node] | None = None) -> str | None:
        """Return why the nodes do not agree on the slot owners yet, or None."""
        view = view or self.admin.view()
        reference: dict[int, str] | None = None
        for node in self.admin.live(view):
            seen = self.admin.nodes_of(node.addr)
            if not seen:
                continue
            me = next((n for n in seen.values() if "myself" in n.flags), None)
            if me is not None and (me.migrating or me.importing):
                return f"{node.addr} has a slot half-moved"
            mine = owners(seen)
            if reference is None:
                reference = mine
            elif mine != reference:
                diff = sorted(s for s in set(mine) | set(reference)
                              if mine.get(s) != reference.get(s))
                return f"{node.addr} disagrees on the owner of {len(diff)} slots (first {diff[0]})"
        return None

    def wait_agreed(self, timeout: float = SETTLE_TIMEOUT_S) -> dict[str, Node]:
        deadline = time.monotonic() + timeout
        while (why := self.agreed()) is not None:
            if time.monotonic() > deadline:
                raise ScaleError(f"the cluster does not agree on its slots: {why}")
            time.sleep(0.05)
        return self.admin.view()

    def half_moved(self) -> list[tuple[int, str, str]]:
        """Slots a run left MIGRATING or IMPORTING: (slot, source id, target id)."""
        found: dict[int, tuple[str, str]] = {}
        for node in self.admin.live(self.admin.view()):
            seen = self.admin.nodes_of(node.addr)
            me = next((n for n in seen.values() if "myself" in n.flags), None)
            if me is None:
                continue
            for slot, dst in me.migrating.items():
                found[slot] = (me.node_id, dst)
            for slot, src in me.importing.items():
                found.setdefault(slot, (src, me.node_id))
        return [(s, a, b) for s, (a, b) in sorted(found.items())]

    def resume(self) -> int:
        """Finish every slot an interrupted run left half-moved; return how many."""
        stuck = self.half_moved()
        if not stuck:
            return 0
        view = self.admin.view()
        self.progress(f"finishing {len(stuck)} slots an interrupted run left half-moved")
        for slot, src, dst in stuck:
            if src not in view or dst not in view:
                raise ScaleError(f"slot {slot} is half-moved between nodes no longer known "
                                 f"({src[:8]} -> {dst[:8]}); fix it with redis-cli --cluster fix")
            self.move_slots([slot], view[src], view[dst], view, resuming=True)
        self.settle([s for s, _, _ in stuck], {s: d for s, _, d in stuck})
        return len(stuck)

    def run(self, p: Plan) -> None:
        """Carry out a plan: one partition at a time, each settled before the next."""
        total = sum(1 for m in p.moves if m.whole)
        done = 0
        for mv in p.moves:
            view = self.admin.view()
            owner = owners(view)
            target = view[mv.target]
            slots = [s for s in partition_range(mv.partition) if owner.get(s) != mv.target]
            by_source: dict[str, list[int]] = {}
            for s in slots:
                by_source.setdefault(owner[s], []).append(s)
            before = self.keys_moved
            for src, group in by_source.items():
                self.move_slots(group, view[src], target, view)
            self.settle(slots, {s: mv.target for s in slots})
            done += mv.whole
            label = f"partition {mv.partition:2d}" if mv.whole else \
                f"stray slots of partition {mv.partition:2d}"
            self.progress(f"[{done}/{total}] {label} -> {target.addr}: {len(slots)} slots, "
                          f"{self.keys_moved - before} keys (total {self.keys_moved} keys)")
            checkpoint()

    def move_slots(self, slots: list[int], src: Node, dst: Node, view: dict[str, Node],
                   resuming: bool = False) -> None:
        """Move ``slots`` from ``src`` to ``dst`` with their keys (one pipeline per step)."""
        source, target = self.admin.client(src.addr), self.admin.client(dst.addr)
        # IMPORTING on the target first: the source's ASK then always lands on a node that
        # accepts it.
        _each(target, [("CLUSTER", "SETSLOT", s, "IMPORTING", src.node_id) for s in slots],
              ignore=("already the owner",) if resuming else ())
        _each(source, [("CLUSTER", "SETSLOT", s, "MIGRATING", dst.node_id) for s in slots],
              ignore=("not the owner",) if resuming else ())
        counts = _each(source, [("CLUSTER", "COUNTKEYSINSLOT", s) for s in slots])
        moved = 0
        for slot, n in zip(slots, counts, strict=True):
            if n:
                moved += self._migrate_keys(source, dst, slot)
        if moved and self.wait_replicas:
            self._wait_replicas(target, dst, view, moved)
        # The target first, so it owns the slots before the source stops sending ASK.
        others = [n for n in self.admin.live(view)
                  if n.is_master and n.node_id not in (src.node_id, dst.node_id)]
        for client in [target, source, *(self.admin.client(n.addr) for n in others)]:
            try:
                _each(client, [("CLUSTER", "SETSLOT", s, "NODE", dst.node_id) for s in slots])
            except redis.RedisError as e:
                # A source that gave its last slot away may already have turned into a
                # replica of the new owner (it learned the move by gossip): nothing to do.
                if client is target or (client is source and "only with masters" not in str(e)):
                    raise
                log.debug("setslot: %s (gossip tells it)", e)
        self.keys_moved += moved

    def _migrate_keys(self, source: redis.Redis, dst: Node, slot: int) -> int:
        moved = 0
        while batch := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH):
            # REPLACE: a key an interrupted MIGRATE already copied (it was not yet deleted
            # from the source) is overwritten with the same content rather than refused.
            source.execute_command("MIGRATE", dst.host, dst.port, "", 0, 60000, "REPLACE",
                                   "AUTH2", self.admin.username, self.admin.password,
                                   "KEYS", *batch)
            moved += len(batch)
        return moved

    def _wait_replicas(self, target: redis.Redis, dst: Node, view: dict[str, Node],
                       moved: int) -> None:
        want = self.replicas_of(view, dst.node_id)
        if not want:
            return
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while (got := int(target.execute_command("WAIT", want, 1000))) < want:
            if time.monotonic() > deadline:
                raise ScaleError(f"{dst.addr}: {got} of {want} replicas confirmed the {moved} "
                                 "keys moved to it; the slots stay half-moved (`watchlog cluster "
                                 "rebalance` finishes them)")

    def settle(self, slots: list[int], owner: dict[int, str]) -> None:
        """Wait until every live node names the new owners and none is half-moved."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            why = None
            for node in self.admin.live(self.admin.view()):
                seen = self.admin.nodes_of(node.addr)
                if not seen:
                    continue
                me = next((n for n in seen.values() if "myself" in n.flags), None)
                if me is not None and (me.migrating or me.importing):
                    why = f"{node.addr} has a slot half-moved"
                    break
                mine = owners(seen)
                if any(mine.get(s) != owner[s] for s in slots):
                    why = f"{node.addr} does not name the new owner yet"
                    break
            if why is None:
                return
            if time.monotonic() > deadline:
                raise ScaleError(f"the slots moved, but the cluster did not agree in time: {why}")
            time.sleep(0.05)


def _each(client: redis.Redis, commands: list[tuple[object, ...]],
          ignore: tuple[str, ...] = ()) -> list[object]:
    """Run commands in one pipeline (no MULTI); raise the first error not ignored."""
    pipe = client.pipeline(transaction=False)
    for cmd in commands:
        pipe.execute_command(*cmd)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, Exception) and not any(t in str(reply) for t in ignore):
            raise reply
    return list(replies)


def rebalance(admin: Admin, *, keep: list[str] | None = None, drain: str | None = None,
              dry_run: bool = False, progress: Progress = print,
              wait_replicas: bool = True) -> Plan:
    """Finish half-moved slots, then even out the partitions over the masters.

    ``keep``: the masters (ids) that hold partitions afterwards (default: every live master
    but ``drain``).
    """
    mover = Mover(admin, progress, wait_replicas=wait_replicas)
    if not dry_run:
        mover.resume()
        checkpoint()
    elif stuck := mover.half_moved():
        progress(f"finish {len(stuck)} slots an interrupted run left half-moved "
                 f"(first {stuck[0][0]})")
    view = mover.wait_agreed() if not dry_run else admin.view()
    if keep is None:
        keep = [n.node_id for n in admin.live(view) if n.is_master and n.node_id != drain]
    the_plan = plan(view, keep)
    for line in describe(the_plan):
        progress(line)
    if not dry_run and the_plan.moves:
        started = time.monotonic()
        mover.run(the_plan)
        progress(f"done: {sum(1 for m in the_plan.moves if m.whole)} partitions and "
                 f"{mover.keys_moved} keys moved in {time.monotonic() - started:.1f} s")
    return the_plan


# -- the native cluster of `watchlog up` ---------------------------------------------------


def local_admin(cluster: LocalCluster) -> Admin:
    """An ``Admin`` of the cluster ``watchlog up`` recorded, as its admin user."""
    from watchlog.launcher.redis.conf import ADMIN_USER

    return Admin([f"{cluster.host}:{p}" for p in cluster.ports], ADMIN_USER,
                 cluster.credentials.redis_admin_password)


def _by_port(view: dict[str, Node]) -> dict[int, Node]:
    return {n.port: n for n in view.values()}


def _next_ports(cluster: LocalCluster, count: int) -> list[int]:
    """The ``count`` ports after the cluster's highest whose bus ports are free as well."""
    from watchlog.launcher.procs import BUS_OFFSET, port_free

    chosen: list[int] = []
    port = max(cluster.ports)
    while len(chosen) < count:
        port += 1
        if port + BUS_OFFSET > 65535:
            raise ScaleError("no free ports above the cluster's for new nodes")
        if port_free(cluster.host, port) and port_free(cluster.host, port + BUS_OFFSET) \
                and not cluster.node_dir(port).exists():
            chosen.append(port)
    return chosen


def add_masters(cluster: LocalCluster, state: Path, count: int, replicas: int | None = None,
                *, dry_run: bool = False, progress: Progress = print,
                wait_replicas: bool = True) -> Plan:
    """Start ``count`` masters (and their replicas), join them, then even out the partitions.

    Masters of the cluster that hold no partition (a grow interrupted before its moves)
    count among the ``count``: a rerun does not start more.
    """
    replicas = cluster.replicas if replicas is None else replicas
    if replicas != cluster.replicas:
        raise Refused(f"this cluster runs {cluster.replicas} replicas per master; new "
                      f"masters get the same (--replicas {cluster.replicas})")
    admin = local_admin(cluster)
    view = admin.view()
    empty = [n for n in admin.live(view) if n.is_master and not n.slots]
    new = max(0, count - len(empty))
    ports = _next_ports(cluster, new * (1 + replicas)) if new else []
    masters, followers = ports[:new], ports[new:]
    if dry_run:
        if stuck := Mover(admin).half_moved():
            progress(f"finish {len(stuck)} slots an interrupted run left half-moved "
                     f"(first {stuck[0][0]})")
        for n in empty:
            progress(f"empty master {n.addr} already joined: it takes partitions")
        for i, port in enumerate(masters):
            mine = followers[i * replicas:(i + 1) * replicas]
            progress(f"start master {cluster.host}:{port}"
                     + (f" with replicas {', '.join(map(str, mine))}" if mine else ""))
        # The plan as if the new masters were there, each holding nothing yet.
        fake = dict(view)
        for port in masters:
            fake[f"new-{port}"] = Node(f"new-{port}", f"{cluster.host}:{port}",
                                       frozenset({"master"}), "-", "connected", frozenset())
        keep = [n.node_id for n in fake.values() if n.is_master
                and "fail" not in n.flags]
        the_plan = plan(fake, keep)
        for line in describe(the_plan):
            progress(line)
        return the_plan
    if ports:
        try:
            _start_and_join(cluster, state, ports, masters, followers, replicas, progress)
        except BaseException:
            # Nothing half-joined is left behind: the nodes are forgotten, stopped, removed.
            _undo_start(cluster, ports)
            raise
    # Replicas in sync and the library loaded BEFORE any slot moves to a new master.
    cluster.wait_ok(time.monotonic() + 60)
    cluster.load_functions(time.monotonic() + 30)
    refresh_monitoring(state, cluster, progress)
    checkpoint()
    return rebalance(local_admin(cluster), progress=progress, wait_replicas=wait_replicas)


def _start_and_join(cluster: LocalCluster, state: Path, ports: list[int], masters: list[int],
                    followers: list[int], replicas: int, progress: Progress) -> None:
    from watchlog.launcher.redis.conf import find_redis_server, server_version

    binary = find_redis_server(None)
    version = server_version(binary)
    for port in ports:
        cluster._spawn(port, binary, version)  # noqa: SLF001 - same config as `up`
    deadline = time.monotonic() + 30
    for port in ports:
        cluster._wait_ping(port, deadline)  # noqa: SLF001
    first = cluster.node_client(cluster.ports[0])
    for port in ports:
        first.execute_command("CLUSTER", "MEET", cluster.host, port)
    before = list(cluster.ports)
    cluster.ports = [*before, *ports]
    try:
        cluster._wait_all_known(time.monotonic() + 30)  # noqa: SLF001
        ids = {p: cluster.node_client(p).execute_command("CLUSTER", "MYID") for p in masters}
        for i, port in enumerate(followers):
            master = masters[i // replicas]
            cluster.node_client(port).execute_command("CLUSTER", "REPLICATE", ids[master])
            progress(f"replica {cluster.host}:{port} follows {cluster.host}:{master}")
    except BaseException:
        cluster.ports = before
        raise
    cluster.masters += len(masters)
    # Recorded at once: `status` and `down` know the new nodes even if a move fails, and a
    # rerun counts the joined, empty masters among those asked for.
    cluster._save_layout()  # noqa: SLF001
    record_ports(state, cluster)
    progress(f"started {len(masters)} masters and {len(followers)} replicas: "
             f"{', '.join(map(str, ports))}")


def _undo_start(cluster: LocalCluster, ports: list[int]) -> None:
    """Forget, stop and remove nodes started by an ``add`` that did not record them."""
    if set(ports) <= set(cluster.ports):
        return  # recorded: they are members now, a rerun uses them
    ids = []
    for port in ports:
        try:
            ids.append(cluster.node_client(port, timeout=1.0).execute_command("CLUSTER", "MYID"))
        except redis.RedisError:
            pass
    for port in cluster.ports:
        for node_id in ids:
            try:
                cluster.node_client(port, timeout=1.0).execute_command("CLUSTER", "FORGET",
                                                                       node_id)
            except redis.RedisError:
                pass  # it never met that one
    LocalClusterView(cluster, ports).stop()
    for port in ports:
        shutil.rmtree(cluster.node_dir(port), ignore_errors=True)


def remove_master(cluster: LocalCluster, state: Path, port: int, *, dry_run: bool = False,
                  progress: Progress = print, wait_replicas: bool = True,
                  force: bool = False) -> Plan | None:
    """Drain the master on ``port`` to the others, then retire it and its replicas.

    A replica whose master would be left with fewer replicas than writes wait for
    (``min-replicas-to-write``, 1 when ``WATCHLOG_WAIT_REPLICAS`` is auto or 1) is refused
    unless ``force``: that master would refuse writes.
    """

    admin = local_admin(cluster)
    view = admin.view()
    node = _by_port(view).get(port)
    if node is None:
        if port in cluster.ports:
            raise Refused(f"redis node {port} is not part of the cluster its peers know")
        raise Refused(f"redis node {port} is not part of this cluster (already retired?)")
    followers = [n for n in view.values() if n.master_id == node.node_id]
    if "master" not in node.flags:
        # A replica (or a drained master that already followed the new owner of its last
        # slot, as Redis 7 makes it do): nothing to drain, retire it.
        master = view.get(node.master_id)
        if master is not None and master.is_master and master.slots:
            left = sum(1 for n in admin.live(view) if n.master_id == master.node_id
                       and n.node_id != node.node_id)
            if left < cluster.min_replicas:
                why = (f"{node.addr} is the only replica of {master.addr}, and writes wait for "
                       f"{cluster.min_replicas} replica (min-replicas-to-write, "
                       f"WATCHLOG_WAIT_REPLICAS): without it {master.addr} refuses writes to "
                       f"its {len(master.slots)} slots")
                if not force:  # --dry-run included: it says what the run would do
                    raise Refused(f"{why}; --force removes it anyway")
                progress(f"warning: {why} (--force)")
        if dry_run:
            progress(f"retire replica {node.addr}")
            return None
        _retire(cluster, state, admin, view, [*followers, node], progress)
        return None
    if sum(1 for n in admin.live(view) if n.is_master) < 2:
        raise Refused("the last master cannot be removed")
    if dry_run:
        the_plan = rebalance(admin, drain=node.node_id, dry_run=True, progress=progress)
        progress(f"then retire {node.addr}"
                 + (f" and its replicas {', '.join(n.addr for n in followers)}"
                    if followers else ""))
        return the_plan
    # A drained master stays an empty master (Redis 7 would otherwise make it a replica of
    # whoever took its last slot, and its replicas with it): it is retired as what it is.
    for n in [node, *followers]:
        admin.client(n.addr).config_set("cluster-allow-replica-migration", "no")
    the_plan = rebalance(admin, drain=node.node_id, progress=progress,
                         wait_replicas=wait_replicas)
    view = Mover(admin).wait_agreed()
    if view[node.node_id].slots:
        raise ScaleError(f"{node.addr} still holds {len(view[node.node_id].slots)} slots")
    _retire(cluster, state, admin, view, [*followers, node], progress)
    return the_plan


def _retire(cluster: LocalCluster, state: Path, admin: Admin, view: dict[str, Node],
            retired: list[Node], progress: Progress) -> None:
    """Make every other node forget ``retired``, stop them, drop their data directories."""
    stay = [n for n in admin.live(view) if n.node_id not in {r.node_id for r in retired}]
    for r in retired:
        for n in stay:
            try:
                admin.client(n.addr).execute_command("CLUSTER", "FORGET", r.node_id)
            except redis.ResponseError as e:
                if "Unknown node" not in str(e):
                    raise
    gone = {r.port for r in retired}
    old = LocalClusterView(cluster, sorted(gone))
    old.stop()
    cluster.ports = [p for p in cluster.ports if p not in gone]
    cluster.masters = sum(1 for n in stay if "master" in n.flags)
    cluster._save_layout()  # noqa: SLF001
    record_ports(state, cluster)
    for p in gone:
        shutil.rmtree(cluster.node_dir(p), ignore_errors=True)
    progress(f"retired {', '.join(r.addr for r in retired)}")
    cluster.wait_ok(time.monotonic() + 60)
    refresh_monitoring(state, cluster, progress)


class LocalClusterView:
    """Stop some nodes of a local cluster (its ``stop`` acts on its ``ports``)."""

    def __init__(self, cluster: LocalCluster, ports: list[int]) -> None:
        self.cluster, self.ports = cluster, ports

    def stop(self) -> None:
        saved = self.cluster.ports
        self.cluster.ports = self.ports
        try:
            self.cluster.stop()
        finally:
            self.cluster.ports = saved


def record_ports(state: Path, cluster: LocalCluster) -> None:
    """Keep ``pids.json``'s list of Redis ports in step with the cluster."""
    path = state / "pids.json"
    if path.exists():
        record = json.loads(path.read_text())
        record["redis"] = {"host": cluster.host, "ports": cluster.ports}
        path.write_text(json.dumps(record, indent=2) + "\n")


def refresh_monitoring(state: Path, cluster: LocalCluster, progress: Progress = print) -> None:
    """Point the native Prometheus and redis_exporter at the nodes the cluster has now.

    Prometheus re-reads its config on SIGHUP (no restart: its data and rule state stay).
    redis_exporter 1.45 reads its password map only when it starts, so it is started again
    with the new map (it holds no state; Prometheus sees at most one failed scrape).
    """
    from watchlog.core.process import alive
    from watchlog.launcher.observability import exporter_password_file

    path = state / "pids.json"
    if not path.exists():
        return
    record = json.loads(path.read_text())
    services = {e["component"]: e for e in record.get("services", [])}
    nodes = [f"{cluster.host}:{p}" for p in cluster.ports]
    config = state / "prometheus" / "prometheus.yml"
    prom = services.get("prometheus")
    if config.exists():
        text = config.read_text()
        header = "".join(ln + "\n" for ln in text.splitlines() if ln.startswith("#"))
        doc = yaml.safe_load(text)
        for job in doc.get("scrape_configs", []):
            if job.get("job_name") == "redis":
                job["static_configs"] = [{"targets": nodes}]
        config.write_text(header + yaml.safe_dump(doc, sort_keys=False))
        if prom and alive(prom.get("pid")):
            os.kill(prom["pid"], signal.SIGHUP)
            progress(f"prometheus reloaded: scrapes {len(nodes)} redis nodes")
    exporter = services.get("redis-exporter")
    if exporter is not None:
        exporter_password_file(state, nodes, cluster.credentials.redis_exporter_password)
        if alive(exporter.get("pid")):
            _restart_exporter(state, exporter, record, path)
            progress("redis_exporter restarted with the new nodes' password map")


def _restart_exporter(state: Path, entry: dict[str, Any], record: dict[str, Any],
                      path: Path) -> None:
    from watchlog.launcher.procs import terminate, wait_dead

    argv = Path(f"/proc/{entry['pid']}/cmdline").read_bytes().split(b"\0")
    env_raw = Path(f"/proc/{entry['pid']}/environ").read_bytes().split(b"\0")
    env = dict(e.decode().split("=", 1) for e in env_raw if b"=" in e)
    terminate(entry["pid"])
    wait_dead(entry["pid"], 5.0)
    from watchlog.launcher.services import Service

    service = Service("redis-exporter", [a.decode() for a in argv if a], entry["address"],
                      "tcp", env)
    service.start(state / "logs")
    service.wait_ready(15.0, state / "logs")
    entry["pid"] = service.pid
    path.write_text(json.dumps(record, indent=2) + "\n")
