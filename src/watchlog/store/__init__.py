"""The storage layer both services share: one object over one cluster client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from redis.cluster import RedisCluster

from watchlog.core.metrics import timed
from watchlog.core.schema import Event
from watchlog.core.settings import Settings
from watchlog.store import feed, reader, writer
from watchlog.store.cluster import ScriptRunner, connect, unavailable_as_503


class Store:
    """Write and read activity logs on a Redis Cluster."""

    def __init__(self, settings: Settings, rc: RedisCluster | None = None) -> None:
        self.settings = settings
        self._rc = rc
        self._runner: ScriptRunner | None = None

    @property
    def rc(self) -> RedisCluster:
        """The cluster client, created on first use (after the server forks its workers)."""
        if self._rc is None:
            with unavailable_as_503("connect"):
                self._rc = connect(self.settings)
        return self._rc

    @property
    def runner(self) -> ScriptRunner:
        if self._runner is None:
            s = self.settings
            self._runner = ScriptRunner(self.rc, s.wait_replicas, s.wait_timeout_ms)
        return self._runner

    def ingest(self, events: Sequence[Event]) -> list[bool]:
        """Store events; return, per event, True if created and False if a duplicate."""
        if not events:
            return []
        calls, positions = writer.ingest_calls(events, self.settings.retention_days)
        created = [False] * len(events)
        with timed("ingest"), unavailable_as_503("ingest"):
            for idx, reply in zip(positions, self.runner.run(calls, wait=True), strict=True):
                for i, flag in zip(idx, reply, strict=True):
                    created[i] = flag == 1
        return created

    def user_page(self, user: str, frm: int, to: int, limit: int, cursor: str | None,
                  type_code: int | None) -> tuple[list[bytes], str | None]:
        with timed("query"), unavailable_as_503("query"):
            return reader.user_page(self.runner, user, frm, to, limit, cursor, type_code)

    def user_days(self, user: str, days: list[str]) -> list[dict[str, dict[str, int]]]:
        with timed("summary"), unavailable_as_503("summary"):
            return reader.user_aggregates(self.rc, user, days)

    def fleet_day(self, day: str) -> tuple[int, dict[str, dict[str, int]]]:
        with timed("report"), unavailable_as_503("report"):
            return reader.fleet_day(self.rc, day)

    def export(self, frm: int, to: int, type_code: int | None) -> Iterator[bytes]:
        """Yield bodies in event-time order; the first chunk is read before returning."""
        it = reader.export(self.runner, frm, to, type_code)
        with timed("export"), unavailable_as_503("export"):
            first = next(it, None)
        if first is None:
            return iter(())
        return _chain_first(first, it)

    def recent(self, limit: int) -> list[bytes]:
        with timed("query"), unavailable_as_503("recent"):
            return reader.recent(self.rc, int(time.time() * 1000), limit)

    def extractor_create(self, name: str, start: str) -> None:
        with timed("extract"), unavailable_as_503("extract"):
            feed.create(self.rc, name, start)

    def extractor_batch(self, name: str, consumer: str, max_items: int,
                        visibility_ms: int) -> tuple[list[tuple[str, bytes]], int]:
        """Return (feed id, body) pairs and how many are redeliveries.

        Entries whose log is already gone by retention are acknowledged at once: they can
        never be delivered.
        """
        with timed("extract"), unavailable_as_503("extract"):
            refs, redelivered = feed.read_batch(self.rc, name, consumer, max_items,
                                                visibility_ms)
            if not refs:
                return [], redelivered
            calls, positions = feed.bodies_calls(refs)
            found: list[bytes | None] = [None] * len(refs)
            for idx, reply in zip(positions, self.runner.run(calls), strict=True):
                for i, body in zip(idx, reply, strict=True):
                    found[i] = body or None
            gone = [fid for (fid, _), b in zip(refs, found, strict=True) if b is None]
            if gone:
                feed.ack(self.rc, name, gone)
        return [(fid, b) for (fid, _), b in zip(refs, found, strict=True) if b], redelivered

    def extractor_ack(self, name: str, ids: list[str]) -> list[str]:
        """Acknowledge feed ids; return those that were not pending (nothing acked)."""
        with timed("ack"), unavailable_as_503("ack"):
            return feed.ack(self.rc, name, ids)

    def extractor_info(self, name: str) -> dict[str, int]:
        with timed("extract"), unavailable_as_503("extract"):
            return feed.info(self.rc, name)

    def extractor_infos(self) -> dict[str, dict[str, int]]:
        """Every extractor with its lag and pending count, in one pass over the feeds."""
        with timed("extract"), unavailable_as_503("extract"):
            return feed.infos(self.rc)

    def extractor_oldest(self) -> dict[str, int]:
        """Each extractor's oldest unacknowledged entry (ms timestamp); see feed.oldest_waiting."""
        with timed("extract"), unavailable_as_503("extract"):
            return feed.oldest_waiting(self.rc)

    def extractor_delete(self, name: str) -> int:
        """Delete an extractor; return on how many partitions it existed (0: unknown)."""
        with unavailable_as_503("extract"):
            return feed.delete(self.rc, name)

    def ready(self) -> tuple[bool, str]:
        """Return whether every master answers and reports ``cluster_state:ok``."""
        try:
            with timed("ready"):
                infos = self.rc.cluster_info(target_nodes=self.rc.PRIMARIES)
        except Exception as e:  # noqa: BLE001 - readiness reports, never raises
            return False, f"cluster unreachable: {type(e).__name__}"
        states = _states(infos)
        bad = [s for s in states if s != "ok"]
        return (not bad and bool(states)), ("ok" if not bad else f"cluster_state:{bad[0]}")

    def close(self) -> None:
        if self._rc is not None:
            self._rc.close()


def _states(infos: object) -> list[str]:
    if isinstance(infos, dict) and "cluster_state" not in infos:
        values = list(infos.values())
    else:
        values = [infos]
    return [str(v.get("cluster_state")) for v in values if isinstance(v, dict)]


def _chain_first(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    with unavailable_as_503("export"):
        yield from rest
