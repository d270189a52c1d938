"""The write path: a batch of events, one Lua call per partition, one pipeline per master."""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache

from watchlog.core import keys
from watchlog.core.schema import Event
from watchlog.store.cluster import Call, Function

INGEST = Function("wl_ingest")
# ARGV[4] of wl_ingest (lua/library.lua): 1 when an earlier attempt of the call may have run.
RETRY_FLAG = 3


@lru_cache(maxsize=512)
def day_end(day: str) -> int:
    """Return the epoch second at which a UTC day (YYYYMMDD) ends."""
    start = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)
    return int(start.timestamp()) + 86400


def ingest_calls(events: Sequence[Event], retention_days: int,
                 now_ms: int | None = None) -> tuple[list[Call], list[list[int]]]:
    """Return one call per partition, and for each call the batch positions it covers."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    minid = now_ms - retention_days * 86400_000
    by_partition: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(events):
        by_partition[e.partition].append(i)
    keep_until = now_ms // 1000 + retention_days * 86400
    calls = [_call(p, [events[i] for i in idx], retention_days, minid, keep_until)
             for p, idx in by_partition.items()]
    return calls, list(by_partition.values())


def _call(p: int, evs: list[Event], retention_days: int, minid: int, keep_until: int) -> Call:
    key_list = [keys.feed(p), keys.attempt(p, secrets.token_hex(8))]
    index: dict[str, int] = {}
    expires: dict[int, int] = {}

    def ref(key: str, day: str) -> int:
        i = index.get(key)
        if i is None:
            key_list.append(key)
            i = index[key] = len(key_list)
            # A day is kept `retention` days after its end, or after its latest write when
            # that is later (a late log is kept as long as any other, never dropped at once).
            expires[i] = max(day_end(day) + retention_days * 86400, keep_until)
        return i

    per_event: list[object] = []
    for e in evs:
        d, u = e.day, e.user
        per_event += (
            ref(keys.user_index(p, u, d), d),
            ref(keys.user_aggregates(p, u, d), d), ref(keys.fleet_index(p, d), d),
            ref(keys.fleet_aggregates(p, d), d), ref(keys.active_users(p, d), d),
            ref(keys.bodies(p, d), d),
            e.event_id, e.ts, e.tcode, e.duration, e.meters,
            "" if e.heart_rate is None else e.heart_rate, e.decikcal, u, e.body,
        )
    pairs = [x for kv in expires.items() for x in kv]
    args = [minid, len(evs), len(expires), 0, *pairs, *per_event]
    return Call(INGEST, key_list, args, keys.partition_slot(p), retry_flag=RETRY_FLAG)
