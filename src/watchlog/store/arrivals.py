"""The reads behind ``GET /activity_logs`` (the seed's plain list): logs by arrival.

Every stored log has one entry in its partition's feed stream, appended when it arrived;
a stream id is the arrival time on its master (ms) and a sequence. The list is the feeds'
entries merged in stream-id order, oldest first. The cursor holds one position per
partition (the last entry handed out), so ``?after=<cursor>`` continues each feed exactly
where the previous answer stopped: no log is skipped or repeated, however many arrive
between two polls, and whatever their event times.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib

from redis.cluster import ClusterPipeline, RedisCluster

from watchlog.core import keys
from watchlog.core.errors import InvalidInput
from watchlog.store import feed
from watchlog.store.cluster import ScriptRunner
from watchlog.store.feed import StreamEntry

PREFIX = "a1."
_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
_MAX_RAW = keys.PARTITIONS * 42  # the longest cursor text: 64 ids of 20 + 1 + 20 digits, and commas
Entry = tuple[tuple[int, int, int], str, bytes]  # ((ms, seq, partition), stream id, ref)


def encode_cursor(ids: list[str]) -> str:
    raw = zlib.compress(",".join(ids).encode(), 9)
    return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> list[str]:
    """Return the 64 feed positions of a cursor, or raise a 400 naming ``after``."""
    bad = InvalidInput("after: not a cursor of this API (use the X-Next-Cursor header)",
                       field="after")
    if not text.startswith(PREFIX):
        raise bad
    try:
        packed = base64.urlsafe_b64decode(text[len(PREFIX):] + "=" * (-len(text) % 4))
        d = zlib.decompressobj()
        ids = d.decompress(packed, _MAX_RAW + 1).decode().split(",")
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError):
        raise bad from None
    if len(ids) != keys.PARTITIONS or not all(_ID.match(i) for i in ids):
        raise bad
    return ids


def _key(p: int, sid: bytes) -> tuple[int, int, int]:
    ms, _, seq = sid.partition(b"-")
    return int(ms), int(seq), p


def _entries(replies: list[list[StreamEntry]]) -> list[Entry]:
    return [(_key(p, sid), sid.decode(), fields[b"r"])
            for p, reply in enumerate(replies) for sid, fields in reply if fields]


def latest(rc: RedisCluster, limit: int) -> tuple[list[Entry], list[str], bool]:
    """Return the ``limit`` latest arrivals (oldest first), each feed's head, and whether
    any feed holds anything."""
    pipe: ClusterPipeline = rc.pipeline(transaction=False)
    for p in range(keys.PARTITIONS):
        pipe.xrevrange(keys.feed(p), "+", "-", count=limit)
    replies = pipe.execute()
    heads = [reply[0][0].decode() if reply else "0-0" for reply in replies]
    taken = sorted(_entries(replies))[-limit:]
    return taken, heads, any(replies)


def after(rc: RedisCluster, cursor: list[str], limit: int) -> tuple[list[Entry], list[str]]:
    """Return the next ``limit`` arrivals after the cursor (oldest first), and the new one."""
    pipe: ClusterPipeline = rc.pipeline(transaction=False)
    for p in range(keys.PARTITIONS):
        pipe.xrange(keys.feed(p), "(" + cursor[p], "+", count=limit)
    taken = sorted(_entries(pipe.execute()))[:limit]
    nxt = list(cursor)
    for (_, _, p), sid, _ref in taken:
        nxt[p] = sid  # ascending: the last one of each partition wins
    return taken, nxt


def anything_stored(rc: RedisCluster) -> bool:
    pipe: ClusterPipeline = rc.pipeline(transaction=False)
    for p in range(keys.PARTITIONS):
        pipe.xlen(keys.feed(p))
    return any(pipe.execute())


def bodies(runner: ScriptRunner, entries: list[Entry]) -> list[bytes]:
    """Return the stored bodies of the entries, in their order (logs gone are left out)."""
    if not entries:
        return []
    refs = [(f"{p}-{sid}", ref) for (_, _, p), sid, ref in entries]
    calls, positions = feed.bodies_calls(refs)
    found: list[bytes | None] = [None] * len(refs)
    for idx, reply in zip(positions, runner.run(calls), strict=True):
        for i, body in zip(idx, reply, strict=True):
            found[i] = body or None
    return [b for b in found if b]
