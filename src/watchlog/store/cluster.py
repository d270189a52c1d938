"""The Redis Cluster client, and Lua calls run as one pipeline per master, in parallel.

redis-py's cluster pipeline refuses EVALSHA, so a batch's script calls are grouped by the
master that owns each call's slot and sent as one plain pipeline per master, the masters
at once. A call that meets MOVED/ASK (slots migrating), NOSCRIPT (a failover to a replica
that never loaded the script) or a dropped connection is retried alone through the
cluster client, which refreshes its slot map; the scripts are idempotent, so a retry is
safe. Attempts are bounded: when the cluster cannot serve, ``StoreUnavailable`` (503).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from redis import exceptions as rx
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from watchlog.errors import StoreUnavailable
from watchlog.settings import Settings

log = logging.getLogger(__name__)

# Errors that mean "the cluster cannot serve this now", not "the request is wrong".
TRANSIENT = (
    rx.ConnectionError, rx.TimeoutError, rx.ClusterDownError, rx.TryAgainError,
    rx.MovedError, rx.AskError, rx.SlotNotCoveredError, rx.MasterDownError,
    rx.BusyLoadingError, rx.ReadOnlyError, rx.ClusterError, rx.RedisClusterException,
)  # fmt: skip
ATTEMPTS = 6  # with backoff capped at 0.5 s: a few seconds, about one failover
REPLICA_RECOUNT_S = 5.0  # the slot map is 16,384 entries: count replicas per master rarely


def connect(settings: Settings) -> RedisCluster:
    """Return a cluster client for the seed node(s) in ``WATCHLOG_REDIS_URL``."""
    nodes = []
    for url in settings.redis_url.split(","):
        parts = urlsplit(url.strip() if "//" in url else "redis://" + url.strip())
        nodes.append(ClusterNode(parts.hostname or "127.0.0.1", parts.port or 6379))
    return RedisCluster(
        startup_nodes=nodes,
        username=settings.redis_username or None,
        password=settings.redis_password or None,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.5), retries=3),
        require_full_coverage=False,
        max_connections=64,
    )


@contextmanager
def unavailable_as_503(operation: str) -> Iterator[None]:
    """Turn a transient cluster error into ``StoreUnavailable`` (503, retry later)."""
    try:
        yield
    except TRANSIENT as e:
        log.warning("redis unavailable during %s: %s", operation, type(e).__name__)
        raise StoreUnavailable(f"the store is unavailable ({type(e).__name__}); retry later",
                               retry_after=1) from e


class Script:
    """A Lua script from ``store/lua``, called by SHA."""

    def __init__(self, name: str) -> None:
        self.source = files("watchlog.store").joinpath(f"lua/{name}.lua").read_text()
        from hashlib import sha1

        self.sha = sha1(self.source.encode()).hexdigest()
        self.name = name


@dataclass(frozen=True, slots=True)
class Call:
    """One script call: its slot decides the master it runs on."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]
    slot: int


class ScriptRunner:
    """Run many script calls: one pipeline per master, the masters in parallel."""

    def __init__(self, rc: RedisCluster, wait_replicas: str = "0", wait_ms: int = 200) -> None:
        self.rc = rc
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="watchlog-redis")
        self.wait_replicas = wait_replicas
        self.wait_ms = wait_ms
        self._replica_counts: dict[str, int] | None = None
        self._counted_at = 0.0

    def run(self, calls: Sequence[Call], *, wait: bool = False) -> list[Any]:
        """Return each call's result in order; retry redirected or failed calls alone."""
        groups: dict[str, tuple[Any, list[int]]] = {}
        for i, call in enumerate(calls):
            node = self._primary(call.slot)
            groups.setdefault(node.name, (node, []))[1].append(i)
        results: list[Any] = [None] * len(calls)
        for idx, replies in self._execute(groups, calls, wait):
            for i, reply in zip(idx, replies, strict=True):
                results[i] = self._retry(calls[i], reply, wait) if isinstance(
                    reply, Exception) else reply
        return results

    def _execute(self, groups: dict[str, tuple[Any, list[int]]], calls: Sequence[Call],
                 wait: bool) -> list[tuple[list[int], list[Any]]]:
        """Run each master's pipeline; in parallel threads when there is more than one."""
        def one(node: Any, idx: list[int]) -> list[Any]:
            try:
                return self._pipeline(node, [calls[i] for i in idx], wait)
            except TRANSIENT as e:
                return [e] * len(idx)

        if len(groups) == 1:  # a single event or partition: no thread hop
            node, idx = next(iter(groups.values()))
            return [(idx, one(node, idx))]
        jobs = [(idx, self.pool.submit(one, node, idx)) for node, idx in groups.values()]
        return [(idx, job.result()) for idx, job in jobs]

    def _primary(self, slot: int) -> Any:
        try:
            return self.rc.nodes_manager.get_node_from_slot(slot)
        except TRANSIENT:
            self.rc.nodes_manager.initialize()
            return self.rc.nodes_manager.get_node_from_slot(slot)

    def _replicas_to_wait(self, node: Any) -> int:
        """Return how many replicas a write on ``node`` waits for (cached, see ``_refresh``)."""
        if self.wait_replicas != "auto":
            return int(self.wait_replicas or 0)
        now = time.monotonic()
        if self._replica_counts is None or now - self._counted_at > REPLICA_RECOUNT_S:
            counts: dict[str, int] = {}
            for nodes in self.rc.nodes_manager.slots_cache.values():
                if nodes:
                    counts[nodes[0].name] = len(nodes) - 1
            self._replica_counts, self._counted_at = counts, now
        return min(1, self._replica_counts.get(node.name, 0))

    def _pipeline(self, node: Any, calls: list[Call], wait: bool) -> list[Any]:
        conn = self.rc.get_redis_connection(node)
        pipe = conn.pipeline(transaction=False)
        for c in calls:
            pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
        replicas = self._replicas_to_wait(node) if wait else 0
        if replicas:
            pipe.execute_command("WAIT", replicas, self.wait_ms)
        replies = pipe.execute(raise_on_error=False)
        if replicas and isinstance(replies[-1], int) and replies[-1] < replicas:
            lag = rx.TimeoutError("write not acknowledged by a replica in time")
            return [lag] * len(calls)
        return replies[: len(calls)]

    def _retry(self, call: Call, error: Exception, wait: bool) -> Any:
        """Run one call through the cluster client, which follows redirects."""
        for attempt in range(ATTEMPTS):
            if isinstance(error, rx.NoScriptError):
                self._load(call.script)
            elif not isinstance(error, TRANSIENT):
                raise error
            elif attempt:
                time.sleep(min(0.5, 0.05 * 2**attempt))
            try:
                return self._single(call, wait)
            except (rx.NoScriptError, *TRANSIENT) as e:
                error = e
                if isinstance(e, TRANSIENT):
                    self._refresh()
        raise StoreUnavailable(f"the store is unavailable ({type(error).__name__}); retry later",
                               retry_after=1) from error

    def _single(self, call: Call, wait: bool) -> Any:
        if not wait:
            return self.rc.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        reply = self._pipeline(self._primary(call.slot), [call], wait)[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _refresh(self) -> None:
        """Re-read the slot map (after a failover or a moved slot); best effort."""
        self._replica_counts = None
        try:
            self.rc.nodes_manager.initialize()
        except TRANSIENT:
            pass

    def _load(self, script: Script) -> None:
        self.rc.script_load(script.source)
