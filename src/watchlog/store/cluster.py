"""The Redis Cluster client, and function calls run as one pipeline per master, at once.

The store's Lua code is one Redis function library (``lua/library.lua``), loaded by an
admin connection; the apps only call it (FCALL). A batch's calls are grouped by the master
that owns each call's slot and written as one pipeline per master, every master's before
any reply is read. A call that meets MOVED/ASK (slots migrating) or a dropped connection
is retried alone on the master the refreshed slot map names; the functions are
idempotent, so a retry is safe. Attempts are bounded: when the cluster cannot serve,
``StoreUnavailable`` (503).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal
from urllib.parse import urlsplit

from hiredis import pack_command
from redis import exceptions as rx
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import PRIMARY, ClusterNode, RedisCluster
from redis.connection import Connection
from redis.retry import Retry

from watchlog.core import keys
from watchlog.core.errors import ReplicasUnavailable, StoreUnavailable
from watchlog.core.metrics import WRITES_REFUSED
from watchlog.core.settings import Settings

log = logging.getLogger(__name__)

# Errors that mean "the cluster cannot serve this now", not "the request is wrong".
TRANSIENT = (
    rx.ConnectionError, rx.TimeoutError, rx.ClusterDownError, rx.TryAgainError,
    rx.MovedError, rx.AskError, rx.SlotNotCoveredError, rx.MasterDownError,
    rx.BusyLoadingError, rx.ReadOnlyError, rx.ClusterError, rx.RedisClusterException,
)  # fmt: skip
ATTEMPTS = 6  # with backoff capped at 0.5 s: a few seconds, about one failover
# A call is retried for at most this long, well inside the time its first answer is kept.
RETRY_DEADLINE_S = keys.ATTEMPT_TTL_S / 3
LAG_RETRIES = 1  # a replica late once gets one more WAIT; late twice, the write is refused
REPLICA_RECOUNT_S = 5.0  # "auto" with no replica yet: look again this often


def _follow_unknown_nodes(rc: RedisCluster) -> RedisCluster:
    """Let ``rc`` (and its pipelines) follow a redirect to a node it has not met yet.

    During a grow (``watchlog cluster add``) the first ASK names a master that owns no slot
    yet, so no slot map lists it: redis-py 8.1 looks the node up, finds None and fails with
    ``AttributeError`` (a 500 from the extractor routes, seen under load). Such a node is
    added to the client's table on the spot, as a primary (ASK and MOVED always name one).
    Patched on the shared ``NodesManager``, so pipelines, which are clients of their own
    class, get it too.
    """
    manager = rc.nodes_manager
    lookup = manager.get_node
    lock = threading.Lock()

    def get_node(host: str | None = None, port: int | None = None,
                 node_name: str | None = None) -> Any:
        node = lookup(host, port, node_name)
        if node is None and (node_name or (host and port)):
            if node_name:
                host, _, raw = node_name.rpartition(":")
                port = int(raw)
            with lock:
                new = ClusterNode(host, port, PRIMARY)
                node = manager.nodes_cache.setdefault(new.name, new)
                manager.create_redis_connections([node])
        return node

    # this client's manager only: redis-py has no hook for a node it has not met
    manager.get_node = get_node  # type: ignore[method-assign]
    return rc


def connect(settings: Settings) -> RedisCluster:
    """Return a cluster client for the startup node(s) in ``WATCHLOG_REDIS_URL``."""
    nodes = []
    for url in settings.redis_url.split(","):
        parts = urlsplit(url.strip() if "//" in url else "redis://" + url.strip())
        nodes.append(ClusterNode(parts.hostname or "127.0.0.1", parts.port or 6379))
    return _follow_unknown_nodes(RedisCluster(
        startup_nodes=nodes,
        username=settings.redis_username or None,
        password=settings.redis_password or None,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.5), retries=3),
        require_full_coverage=False,
        max_connections=64,
    ))


@contextmanager
def unavailable_as_503(operation: str) -> Iterator[None]:
    """Turn a transient cluster error into ``StoreUnavailable`` (503, retry later)."""
    try:
        yield
    except TRANSIENT as e:
        log.warning("redis unavailable during %s: %s", operation, type(e).__name__)
        raise StoreUnavailable(f"the store is unavailable ({type(e).__name__}); retry later",
                               retry_after=1) from e
    except rx.ResponseError as e:
        if not _no_replicas(e):
            raise
        # A master with no replica in sync refuses writes (min-replicas-to-write): XGROUP,
        # XREADGROUP and XACK too. Nothing was written; the client retries later. Counted
        # with the runner's refusals: one figure for every write refused for want of replicas.
        WRITES_REFUSED.labels("no_replica").inc()
        log.warning("redis refused a write during %s: no replica in sync", operation)
        raise ReplicasUnavailable("a master has no replica in sync, so it takes no writes; "
                                  "retry later", retry_after=1) from e


LIBRARY = files("watchlog.store").joinpath("lua/library.lua").read_text()


class Function:
    """A function of the store's Redis library (``store/lua/library.lua``), run by FCALL."""

    def __init__(self, name: str) -> None:
        if f"function_name = '{name}'" not in LIBRARY:
            raise ValueError(f"{name} is not registered in lua/library.lua")
        self.name = name


def load_library(admin: RedisCluster, library: str = LIBRARY) -> None:
    """Load (or replace) the library on every master: an admin connection's job.

    The applications' Redis user may call the functions but not load code; the library is
    kept in the AOF and replicated, so restarts and failovers keep it.
    """
    admin.execute_command("FUNCTION", "LOAD", "REPLACE", library,
                          target_nodes=RedisCluster.PRIMARIES)


def _missing_function(error: Exception) -> bool:
    return isinstance(error, rx.ResponseError) and "Function not found" in str(error)


@dataclass(frozen=True, slots=True)
class Call:
    """One function call: its slot decides the master it runs on.

    ``retry_flag``, when set, is the position in ``args`` of a flag that a retry sets to 1:
    the script then answers what an earlier attempt of the same call answered, if it ran.
    """

    function: Function
    keys: Sequence[str]
    args: Sequence[Any]
    slot: int
    retry_flag: int | None = None

    def again(self) -> Call:
        """Return this call as a retry (its first attempt may have run)."""
        if self.retry_flag is None:
            return self
        args = list(self.args)
        args[self.retry_flag] = 1
        return Call(self.function, self.keys, args, self.slot, None)


@dataclass(slots=True)
class _Sent:
    """A master's pipeline, written and not yet read."""

    node: str
    conn: Connection | None
    n: int
    replicas: int
    error: Exception | None


class ReplicaLag(Exception):
    """Fewer replicas confirmed a write (WAIT) than the runner requires."""

    def __init__(self, confirmed: int, required: int) -> None:
        super().__init__(f"{confirmed} of {required} replicas confirmed the write in time")
        self.confirmed, self.required = confirmed, required


def _no_replicas(error: Exception) -> bool:
    """Return True for a master's own refusal (``min-replicas-to-write``): nothing written."""
    return isinstance(error, rx.ResponseError) and "NOREPLICAS" in str(error)


class ScriptRunner:
    """Run many script calls: one pipeline per master, the masters at once.

    Writes (``wait=True``) are acknowledged only after ``wait_replicas`` replicas confirm
    them (``WAIT``). That number is configuration, never the replicas the slot map lists
    right now: a replica flagged as failed leaves the slot map, and a count taken from it
    would stop waiting exactly when waiting matters. ``"auto"`` means 1 when any master has
    a replica in the cluster's node table, failed replicas included, and once 1 it stays 1.
    """

    def __init__(self, rc: RedisCluster, wait_replicas: int | Literal["auto"] = 0,
                 wait_ms: int = 200) -> None:
        self.rc = rc
        self._idle: dict[str, list[Connection]] = {}  # per master: connections not in use
        self.wait_replicas = wait_replicas
        self.wait_ms = wait_ms
        self._auto: int | None = None
        self._counted_at = 0.0
        self._refusing: dict[str, float] = {}  # master -> since when its writes are refused

    def run(self, calls: Sequence[Call], *, wait: bool = False) -> list[Any]:
        """Return each call's result in order; retry redirected or failed calls alone."""
        groups: dict[str, tuple[ClusterNode, list[int]]] = {}
        for i, call in enumerate(calls):
            node = self._primary(call.slot)
            groups.setdefault(node.name, (node, []))[1].append(i)
        results: list[Any] = [None] * len(calls)
        for idx, replies in self._execute(groups, calls, wait):
            for i, reply in zip(idx, replies, strict=True):
                results[i] = self._retry(calls[i], reply, wait) if isinstance(
                    reply, Exception) else reply
        return results

    def _execute(self, groups: dict[str, tuple[ClusterNode, list[int]]], calls: Sequence[Call],
                 wait: bool) -> list[tuple[list[int], list[Any]]]:
        """Send every master's pipeline, then read the replies: the masters work at once.

        Measured against a thread per master (and redis-py's Pipeline object), this saves
        the thread hops and ~40 us of client CPU per round trip; Redis buffers the replies
        of a pipeline we are not reading yet, so sending all first cannot deadlock.
        """
        sent = [(idx, self._send(node, [calls[i] for i in idx], wait))
                for node, idx in groups.values()]
        return [(idx, self._receive(s)) for idx, s in sent]

    def _primary(self, slot: int) -> ClusterNode:
        try:
            return self.rc.nodes_manager.get_node_from_slot(slot)
        except TRANSIENT:
            self.rc.nodes_manager.initialize()
            return self.rc.nodes_manager.get_node_from_slot(slot)

    def replicas_to_wait(self) -> int:
        """Return how many replicas must confirm a write before it is acknowledged."""
        if self.wait_replicas != "auto":
            return int(self.wait_replicas or 0)
        now = time.monotonic()
        if self._auto is None or (not self._auto and now - self._counted_at > REPLICA_RECOUNT_S):
            self._counted_at = now
            try:
                found = min(1, _most_replicas(self.rc.cluster_nodes()))
            except TRANSIENT:
                found = 0
            self._auto = max(self._auto or 0, found)
        return self._auto

    def _send(self, node: ClusterNode, calls: list[Call], wait: bool) -> _Sent:
        """Write one master's script calls (and a WAIT) on a connection of our own."""
        replicas = self.replicas_to_wait() if wait else 0
        commands: list[tuple[Any, ...]] = [
            ("FCALL", c.function.name, len(c.keys), *c.keys, *c.args) for c in calls]
        if replicas:
            commands.append(("WAIT", replicas, self.wait_ms))
        # hiredis packs str, bytes and int arguments directly: redis-py's pack first walks
        # every argument in Python (~10% of the producer's CPU on 1,000-log batches)
        packed = b"".join([pack_command(c) for c in commands])
        idle = self._idle.setdefault(node.name, [])
        conn = None
        try:
            try:
                conn = idle.pop()
            except IndexError:
                conn = self.rc.get_redis_connection(node).connection_pool.get_connection()
            conn.send_packed_command([packed], check_health=False)
        except TRANSIENT as e:
            if conn is not None:
                idle.append(conn)  # disconnected by redis-py; it reconnects on its next use
            return _Sent(node.name, None, len(calls), replicas, e)
        return _Sent(node.name, conn, len(calls), replicas, None)

    def _receive(self, sent: _Sent) -> list[Any]:
        """Read one master's replies; a reply that is an error stays in its place."""
        if sent.conn is None:
            return [sent.error] * sent.n
        replies: list[Any] = []
        try:
            for _ in range(sent.n + (1 if sent.replicas else 0)):
                try:
                    replies.append(sent.conn.read_response())
                except rx.ResponseError as e:
                    replies.append(e)
        except TRANSIENT as e:  # the connection is closed: nothing more can be read
            replies += [e] * (sent.n - len(replies))
            if sent.replicas:  # WAIT's answer never came: no write here is confirmed
                return [r if isinstance(r, Exception) else e for r in replies[: sent.n]]
            return replies[: sent.n]
        except BaseException:
            sent.conn.disconnect()  # replies left unread: never reuse it as it is
            raise
        finally:
            self._idle[sent.node].append(sent.conn)
        if sent.replicas:
            confirmed = replies[-1] if isinstance(replies[-1], int) else 0
            if confirmed < sent.replicas:
                lag = ReplicaLag(confirmed, sent.replicas)
                return [r if isinstance(r, Exception) else lag for r in replies[: sent.n]]
            since = self._refusing.pop(sent.node, None) if self._refusing else None
            if since is not None:
                log.warning("replicas of %s confirm writes again, after %.1f s of refusals",
                            sent.node, time.monotonic() - since)
        return replies[: sent.n]

    def _pipeline(self, node: ClusterNode, calls: list[Call], wait: bool) -> list[Any]:
        return self._receive(self._send(node, calls, wait))

    def _retry(self, call: Call, error: Exception, wait: bool) -> Any:
        """Run one call again, alone, through the cluster client, which follows redirects.

        The retry is ``call.again()``: when the first attempt did run (its reply or its WAIT
        was lost), the script answers what that attempt answered, so a new log is never
        called a duplicate of itself. Retries stop before that answer expires.
        """
        retry = call.again()
        deadline = time.monotonic() + RETRY_DEADLINE_S
        lagged = 0
        for attempt in range(ATTEMPTS):
            lagged += isinstance(error, ReplicaLag)
            self._give_up_on(call, error, lagged)
            if attempt and not isinstance(error, ReplicaLag):
                time.sleep(min(0.5, 0.05 * 2**attempt))
            if time.monotonic() > deadline:
                break
            try:
                return self._single(retry, wait)
            except (ReplicaLag, rx.RedisError) as e:
                error = e
                if isinstance(e, TRANSIENT):
                    self._refresh()
        self._give_up_on(call, error, lagged + isinstance(error, ReplicaLag))
        raise StoreUnavailable(f"the store is unavailable ({type(error).__name__}); retry later",
                               retry_after=1) from error

    def _give_up_on(self, call: Call, error: Exception, lagged: int) -> None:
        """Raise for an error no retry can mend; return for one worth another attempt."""
        if isinstance(error, ReplicaLag):
            if lagged > LAG_RETRIES:
                raise self._refuse(call, error, "replica_timeout")
        elif _no_replicas(error):
            raise self._refuse(call, error, "no_replica")
        elif _missing_function(error):
            raise self._unloaded(call, error)
        elif not isinstance(error, TRANSIENT):
            raise error

    def _refuse(self, call: Call, error: Exception, reason: str) -> ReplicasUnavailable:
        """Count a write refused for want of replicas; log once per incident, not per write.

        An incident is one master refusing, from its first refusal to its next write that
        replicas confirm.
        """
        WRITES_REFUSED.labels(reason).inc()
        try:
            node = self._primary(call.slot).name
        except TRANSIENT:
            node = f"slot {call.slot}"
        if node not in self._refusing:
            self._refusing[node] = time.monotonic()
            log.error("refusing writes on %s (503) until its replicas confirm them: %s "
                      "(WATCHLOG_WAIT_REPLICAS=%s)", node, str(error).split(" script:")[0],
                      self.wait_replicas)
        return ReplicasUnavailable(
            "not enough replicas confirmed the write, so it is not acknowledged; retry later "
            "(a retry is answered duplicate if this attempt was stored)", retry_after=1)

    def _unloaded(self, call: Call, error: Exception) -> StoreUnavailable:
        log.error("redis function %s is not loaded on the master of slot %d: the library is "
                  "loaded by `watchlog up` or compose's redis-cluster-init (%s)",
                  call.function.name, call.slot, error)
        return StoreUnavailable("the store's functions are not loaded on every master; "
                                "retry later", retry_after=5)

    def _single(self, call: Call, wait: bool) -> Any:
        reply = self._pipeline(self._primary(call.slot), [call], wait)[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _refresh(self) -> None:
        """Re-read the slot map (after a failover or a moved slot); best effort."""
        try:
            self.rc.nodes_manager.initialize()
        except TRANSIENT:
            pass


def _most_replicas(nodes: Mapping[str, Mapping[str, object]] | None) -> int:
    """Return the most replicas any master has in ``CLUSTER NODES``, failed ones included."""
    per_master: dict[object, int] = {}  # by master id
    for info in (nodes or {}).values():
        master = info.get("master_id") or "-"
        if master != "-" and "slave" in str(info.get("flags", "")):
            per_master[master] = per_master.get(master, 0) + 1
    return max(per_master.values(), default=0)
