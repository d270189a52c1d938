"""Incremental extraction: consumer groups on the partition feeds.

An extractor is a consumer group of the same name on every partition's feed stream. A
batch first reclaims entries delivered but not acknowledged for longer than the visibility
timeout (XAUTOCLAIM: at-least-once), then reads new ones (XREADGROUP). Acknowledged entries
are never delivered again; the group's position lives in Redis (AOF), so an extractor
resumes where it stopped after any restart. Feed ids are ``<partition>-<stream id>``.
"""

from __future__ import annotations

import random
from typing import Any

from redis import exceptions as rx

from watchlog import keys
from watchlog.errors import InvalidInput, NotFound

P = keys.PARTITIONS


def create(rc: Any, name: str, start: str = "earliest") -> None:
    """Create the extractor's group on every feed (idempotent)."""
    sid = "0" if start == "earliest" else "$"
    pipe = rc.pipeline(transaction=False)
    for p in range(P):
        pipe.xgroup_create(keys.feed(p), name, id=sid, mkstream=True)
    for reply in pipe.execute(raise_on_error=False):
        if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
            raise reply


def _counts(max_items: int) -> list[int]:
    """Share ``max_items`` over the partitions, the remainder from a random one on."""
    base, extra = divmod(max_items, P)
    first = random.randrange(P)
    return [base + (1 if (p - first) % P < extra else 0) for p in range(P)]


def read_batch(rc: Any, name: str, consumer: str, max_items: int,
               visibility_ms: int) -> tuple[list[tuple[str, bytes]], int]:
    """Return (feed id, body) pairs and how many of them are redeliveries."""
    counts = _counts(max_items)
    pipe = rc.pipeline(transaction=False)
    for p in range(P):
        if counts[p]:
            pipe.xautoclaim(keys.feed(p), name, consumer, visibility_ms, "0-0", count=counts[p])
    claimed = _entries(pipe.execute(raise_on_error=False), counts, lambda r: r[1], name)
    pipe = rc.pipeline(transaction=False)
    left = [counts[p] - len(claimed[p]) for p in range(P)]
    for p in range(P):
        if left[p] > 0:
            pipe.xreadgroup(name, consumer, {keys.feed(p): ">"}, count=left[p])
    fresh = _entries(pipe.execute(raise_on_error=False), left, _stream_entries, name)
    items = [(f"{p}-{sid.decode()}", fields[b"e"]) for p in range(P)
             for sid, fields in claimed[p] + fresh[p] if fields]
    return items, sum(len(c) for c in claimed)


def _stream_entries(reply: Any) -> list[Any]:
    return reply[0][1] if reply else []


def _entries(replies: list[Any], counts: list[int], pick: Any, name: str) -> list[list[Any]]:
    out: list[list[Any]] = [[] for _ in range(P)]
    it = iter(replies)
    for p in range(P):
        if counts[p] > 0:
            reply = next(it)
            if isinstance(reply, rx.ResponseError) and "NOGROUP" in str(reply):
                raise NotFound(f"extractor {name!r} does not exist; create it first")
            if isinstance(reply, Exception):
                raise reply
            out[p] = pick(reply)
    return out


def ack(rc: Any, name: str, feed_ids: list[str]) -> int:
    """Acknowledge delivered entries; return how many were pending."""
    by_p: dict[int, list[str]] = {}
    for fid in feed_ids:
        p, _, sid = fid.partition("-")
        if not p.isdigit() or int(p) >= P or not sid:
            raise InvalidInput(f"ids: {fid!r} is not a feed id of this API", field="ids")
        by_p.setdefault(int(p), []).append(sid)
    pipe = rc.pipeline(transaction=False)
    for p, sids in by_p.items():
        pipe.xack(keys.feed(p), name, *sids)
    return sum(r for r in pipe.execute(raise_on_error=False) if isinstance(r, int))


def info(rc: Any, name: str) -> dict[str, int]:
    """Return the extractor's lag (not yet delivered) and pending (not acknowledged)."""
    pipe = rc.pipeline(transaction=False)
    for p in range(P):
        pipe.xinfo_groups(keys.feed(p))
    lag = pending = found = 0
    for reply in pipe.execute(raise_on_error=False):
        if isinstance(reply, Exception):
            continue
        for g in reply:
            if g["name"].decode() == name:
                found += 1
                lag += g.get("lag") or 0
                pending += g["pending"]
    if not found:
        raise NotFound(f"extractor {name!r} does not exist")
    return {"lag": lag, "pending": pending, "partitions": found}


def names(rc: Any) -> list[str]:
    """Return the extractors that exist (groups on partition 0's feed)."""
    try:
        return sorted(g["name"].decode() for g in rc.xinfo_groups(keys.feed(0)))
    except rx.ResponseError:
        return []


def delete(rc: Any, name: str) -> None:
    pipe = rc.pipeline(transaction=False)
    for p in range(P):
        pipe.xgroup_destroy(keys.feed(p), name)
    pipe.execute(raise_on_error=False)
