"""The write path: a batch of events, one Lua call per partition, one pipeline per master."""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache

from watchlog.core import keys
from watchlog.core.schema import Event
from watchlog.store import layout
from watchlog.store.cluster import Call, Function

INGEST = Function(layout.INGEST.function)
# The position in a call's args of the flag a retry sets (its first attempt may have run).
RETRY_FLAG = layout.INGEST.arg("head", "retry")
# Parts this module builds by hand, in an order checked against the layout at import.
layout.INGEST.order("keys", "head", ("feed", "attempt"))
layout.INGEST.order("keys", "day", ("fleet_index", "aggregates", "active_users", "bodies"))
layout.INGEST.order("keys", "group", ("user_index",))
layout.INGEST.order("args", "day", ("expire_at",))
layout.INGEST.order("args", "group", ("day", "user", "count"))
layout.INGEST.order("args", "log", ("event_id", "body"))


class _Nonces:
    """Unique names for write attempts: a random prefix per process and a counter.

    An attempt's key must not be another live attempt's (keys.ATTEMPT_TTL_S); 64 random
    bits per process (drawn again in a forked child) and a counter make it so, without a
    call to the system's random source per write (~5 % of a single-log request's CPU).
    """

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.count = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.count):x}"


_nonce = _Nonces()


@lru_cache(maxsize=512)
def day_end(day: str) -> int:
    """Return the epoch second at which a UTC day (YYYYMMDD) ends."""
    start = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)
    return int(start.timestamp()) + 86400


def ingest_calls(events: Sequence[Event], retention_days: int,
                 now_ms: int | None = None) -> tuple[list[Call], list[list[int]]]:
    """Return one call per partition, and for each call the batch positions it covers, in
    the order of the call's answers (its logs grouped by day, then user)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    minid = now_ms - retention_days * keys.DAY_MS
    # partition -> day -> user -> batch positions (dicts keep first-seen order)
    by_partition: dict[int, dict[str, dict[str, list[int]]]] = defaultdict(dict)
    for i, e in enumerate(events):
        by_partition[e.partition].setdefault(e.day, {}).setdefault(e.user, []).append(i)
    keep_until = now_ms // 1000 + retention_days * 86400
    calls, positions = [], []
    for p, days in by_partition.items():
        call, idx = _call(p, days, events, retention_days, minid, keep_until)
        calls.append(call)
        positions.append(idx)
    return calls, positions


def _call(p: int, days: dict[str, dict[str, list[int]]], events: Sequence[Event],
          retention_days: int, minid: int, keep_until: int) -> tuple[Call, list[int]]:
    key_list = [keys.feed(p), keys.attempt(p, _nonce())]
    group_keys: list[str] = []
    day_args: list[int] = []
    group_args: list[object] = []
    bodies: list[object] = []
    order: list[int] = []
    for day_no, (d, users) in enumerate(days.items(), 1):
        key_list += (keys.fleet_index(p, d), keys.fleet_aggregates(p, d),
                     keys.active_users(p, d), keys.bodies(p, d))
        # A day is kept `retention` days after its end, or after its latest write when
        # that is later (a late log is kept as long as any other, never dropped at once).
        day_args.append(max(day_end(d) + retention_days * 86400, keep_until))
        for u, idx in users.items():
            group_keys.append(keys.user_index(p, u, d))
            group_args += (day_no, u, len(idx))
            for i in idx:
                bodies += (events[i].event_id, events[i].body)
            order += idx
    head = layout.INGEST.pack("head", minid=minid, retry=0, days=len(days),
                              groups=len(group_args) // 3)
    call = Call(INGEST, key_list + group_keys, [*head, *day_args, *group_args, *bodies],
                keys.partition_slot(p), retry_flag=RETRY_FLAG)
    return call, order
