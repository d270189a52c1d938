"""The read paths: per-user pages, summaries, the fleet report, export and recent logs."""

from __future__ import annotations

import base64
import heapq
from collections.abc import Iterator

import msgspec
from redis.cluster import ClusterPipeline, RedisCluster

from watchlog.core import keys
from watchlog.core.errors import InvalidInput
from watchlog.core.schema import ACTIVITY_TYPES, body_ts
from watchlog.store import layout
from watchlog.store.cluster import Call, Function, ScriptRunner
from watchlog.store.layout import AGGREGATES, EXPIRES_FIELD, HR_COUNT, HR_MAX, HR_SUM

PAGE = Function(layout.PAGE.function)
layout.PAGE.order("keys", "day", ("index", "bodies"))  # the key pairs built below
EXPORT_CHUNK = 2000


def days_between(frm_ms: int, to_ms: int) -> list[str]:
    """Return the UTC days (YYYYMMDD) that a closed time range touches, in order."""
    day = keys.DAY_MS
    return [keys.day_of(d * day) for d in range(frm_ms // day, to_ms // day + 1)]


class Cursor(msgspec.Struct, array_like=True):
    """Where the next page starts: after ``member`` in ``day``'s index."""

    day: str
    member: str


def encode_cursor(c: Cursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(c)).decode().rstrip("=")


def decode_cursor(raw: str) -> Cursor:
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)),
                                   type=Cursor)
    except (ValueError, msgspec.DecodeError):
        raise InvalidInput("cursor: not a cursor this API returned", field="cursor") from None


def user_page(runner: ScriptRunner, user: str, frm: int, to: int, limit: int,
              cursor: str | None, type_code: int | None) -> tuple[list[bytes], str | None]:
    """Return up to ``limit`` bodies of a user in event-time order, and the next cursor."""
    p = keys.partition_of(user)
    days = days_between(frm, to)
    after = ""
    if cursor:
        c = decode_cursor(cursor)
        if c.day not in days:
            raise InvalidInput("cursor: does not belong to this time range", field="cursor")
        days, after = days[days.index(c.day):], c.member
    want = "" if type_code is None else str(type_code)
    key_list = [k for day in days for k in (keys.user_index(p, user, day),
                                            keys.bodies(p, day))]
    args = layout.PAGE.pack("head", from_ms=frm, to_ms=to, limit=limit, after=after,
                            type=want, prefix=keys.ref(user, ""))
    call = Call(PAGE, key_list, args, keys.partition_slot(p))
    exhausted, last_day, last, *items = runner.run([call])[0]  # every day in one round trip
    if exhausted or not items:
        return items, None
    return items, encode_cursor(Cursor(days[last_day - 1], last.decode()))


def parse_aggregates(raw: dict[bytes, bytes]) -> dict[str, dict[str, int]]:
    """Turn an aggregates hash into a dict per activity type (the figures ``AGGREGATES``
    names; the heart-rate ones only when some log of the type had a heart rate)."""
    out: dict[str, dict[str, int]] = {}
    legacy: dict[str, dict[str, int]] = {}
    for f, v in raw.items():
        code, _, name = f.decode().partition(":")
        if name:  # one field per figure, as written before the packed fields: still read
            legacy.setdefault(ACTIVITY_TYPES[int(code)], {})[name] = int(v)
        elif code != EXPIRES_FIELD:
            figures = dict(zip(AGGREGATES, map(int, v.split()), strict=True))
            if not figures[HR_COUNT]:
                for name in (HR_SUM, HR_COUNT, HR_MAX):
                    del figures[name]
            out[ACTIVITY_TYPES[int(code)]] = figures
    for t, figures in legacy.items():
        merge_aggregates(out.setdefault(t, {}), figures)
    return out


CODES = [str(c) for c in range(len(ACTIVITY_TYPES))]
# The partition's fields, and the ones written one per figure before the figures were packed
# (still read: a hash written then keeps them until it expires).
FLEET_FIELDS = CODES + [f"{c}:{name}" for c in CODES for name in AGGREGATES]


def _fields(names: list[str], values: list[bytes | None]) -> dict[bytes, bytes]:
    return {n.encode(): v for n, v in zip(names, values, strict=True) if v is not None}


def user_aggregates(rc: RedisCluster, user: str,
                    days: list[str]) -> list[dict[str, dict[str, int]]]:
    """Return the user's aggregates for each day (one pipeline, one slot).

    A day's figures are the user's fields of the partition-day aggregates hash, merged with
    the older per-user-day hash (``keys.user_aggregates``) for days written before.
    """
    p = keys.partition_of(user)
    mine = [keys.user_field(user, c) for c in CODES]
    pipe: ClusterPipeline = rc.pipeline(transaction=False)
    for day in days:
        pipe.hmget(keys.fleet_aggregates(p, day), mine)
        pipe.hgetall(keys.user_aggregates(p, user, day))
    replies = pipe.execute()
    out = []
    for fields, older in zip(replies[0::2], replies[1::2], strict=True):
        found = parse_aggregates(_fields(CODES, fields))
        for t, figures in parse_aggregates(older).items():
            merge_aggregates(found.setdefault(t, {}), figures)
        out.append(found)
    return out


def fleet_day(rc: RedisCluster, day: str) -> tuple[int, dict[str, dict[str, int]]]:
    """Return the active users and merged aggregates of every partition for one day."""
    pipe: ClusterPipeline = rc.pipeline(transaction=False)
    for p in range(keys.PARTITIONS):
        pipe.scard(keys.active_users(p, day))
        pipe.hmget(keys.fleet_aggregates(p, day), FLEET_FIELDS)
    replies = pipe.execute()
    users = sum(replies[0::2])
    merged: dict[str, dict[str, int]] = {}
    for raw in replies[1::2]:
        for t, fields in parse_aggregates(_fields(FLEET_FIELDS, raw)).items():
            merge_aggregates(merged.setdefault(t, {}), fields)
    return users, merged


def merge_aggregates(into: dict[str, int], agg: dict[str, int]) -> None:
    """Add one set of aggregate fields into another (heart-rate max ``x`` takes the max)."""
    for name, v in agg.items():
        into[name] = max(into.get(name, 0), v) if name == HR_MAX else into.get(name, 0) + v


def _fleet_call(p: int, day: str, frm: int, to: int, want: str, after: str) -> Call:
    args = layout.PAGE.pack("head", from_ms=frm, to_ms=to, limit=EXPORT_CHUNK, after=after,
                            type=want, prefix="")
    return Call(PAGE, (keys.fleet_index(p, day), keys.bodies(p, day)), args,
                keys.partition_slot(p))


def _partition_stream(runner: ScriptRunner, p: int, day: str, frm: int, to: int,
                      want: str, first: list[bytes]) -> Iterator[bytes]:
    """Yield one partition-day's fleet index in order, a chunk per round trip."""
    chunk = first
    while True:
        exhausted, _day, last, *bodies = chunk
        yield from bodies
        if exhausted or not bodies:
            return
        chunk = runner.run([_fleet_call(p, day, frm, to, want, last.decode())])[0]


def export(runner: ScriptRunner, frm: int, to: int, type_code: int | None) -> Iterator[bytes]:
    """Yield every body in [frm, to] in event-time order, merged across partitions.

    Memory stays bounded: one chunk per partition at a time. The first chunk of every
    partition is fetched in one parallel round (one pipeline per master).
    """
    want = "" if type_code is None else str(type_code)
    for day in days_between(frm, to):
        firsts = runner.run([_fleet_call(p, day, frm, to, want, "")
                             for p in range(keys.PARTITIONS)])
        streams = [_partition_stream(runner, p, day, frm, to, want, firsts[p])
                   for p in range(keys.PARTITIONS)]
        yield from heapq.merge(*streams, key=body_ts)


def recent(rc: RedisCluster, now_ms: int, limit: int) -> list[bytes]:
    """Return the ``limit`` most recent bodies of the fleet (today, then yesterday)."""
    out: list[bytes] = []
    for day in (keys.day_of(now_ms), keys.day_of(now_ms - keys.DAY_MS)):
        pipe: ClusterPipeline = rc.pipeline(transaction=False)
        for p in range(keys.PARTITIONS):
            pipe.zrange(keys.fleet_index(p, day), 0, limit - 1, desc=True)
        refs = pipe.execute()
        pipe = rc.pipeline(transaction=False)
        for p in range(keys.PARTITIONS):
            if refs[p]:
                pipe.hmget(keys.bodies(p, day), refs[p])
        found = iter(pipe.execute())
        newest = [[b for b in next(found) if b] if r else [] for r in refs]
        merged = heapq.merge(*newest, key=body_ts, reverse=True)
        out += [b for _, b in zip(range(limit - len(out)), merged, strict=False)]
        if len(out) >= limit:
            break
    return out
