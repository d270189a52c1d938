"""Incremental extraction: consumer groups on the partition feeds.

An extractor is a consumer group of the same name on every partition's feed stream. A
batch first reclaims entries delivered but not acknowledged for longer than the visibility
timeout (XAUTOCLAIM: at-least-once), then reads new ones (XREADGROUP). Acknowledged entries
are never delivered again; the group's position lives in Redis (AOF), so an extractor
resumes where it stopped after any restart. Feed ids are ``<partition>-<stream id>``.
An entry holds ``<event time ms> <user> <event_id>``; the body is read from the bodies hash
of that day, under ``<user> <event_id>`` (``keys.ref``).
"""

from __future__ import annotations

import random
from typing import Any

from redis import exceptions as rx
from redis.cluster import ClusterPipeline, RedisCluster

from watchlog.core import keys
from watchlog.core.errors import InvalidInput, NotFound
from watchlog.store.cluster import Call, Function

P = keys.PARTITIONS
BODIES = Function("wl_bodies")
# A stream entry as redis-py returns it: (id, fields); fields are None once XDEL took it.
StreamEntry = tuple[bytes, dict[bytes, bytes] | None]


def create(rc: RedisCluster, name: str, start: str = "earliest") -> None:
    """Create the extractor's group on every feed (idempotent)."""
    sid = "0" if start == "earliest" else "$"
    pipe: ClusterPipeline = rc.pipeline(transaction=False)
    for p in range(P):
        pipe.xgroup_create(keys.feed(p), name, id=sid, mkstream=True)
    for reply in pipe.execute(raise_on_error=False):
        if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
            raise reply


ROUNDS = P + 1  # each round fills the budget or finds at least one partition drained


def _share(budget: int, parts: list[int]) -> dict[int, int]:
    """Share ``budget`` over ``parts``, the remainder from a random one on."""
    base, extra = divmod(budget, len(parts))
    first = random.randrange(len(parts))
    counts = {p: base + (1 if (i - first) % len(parts) < extra else 0)
              for i, p in enumerate(parts)}
    return {p: c for p, c in counts.items() if c > 0}


def read_batch(rc: RedisCluster, name: str, consumer: str, max_items: int,
               visibility_ms: int) -> tuple[list[tuple[str, bytes]], int]:
    """Return (feed id, body) pairs and how many of them are redeliveries."""
    claimed = _claim(rc, name, consumer, max_items, visibility_ms)
    n_claimed = sum(len(c) for c in claimed)
    fresh = _read_new(rc, name, consumer, max_items - n_claimed)
    items = [(f"{p}-{sid.decode()}", fields[b"r"]) for p in range(P)
             for sid, fields in claimed[p] + fresh[p] if fields]
    return items, n_claimed


def bodies_calls(refs: list[tuple[str, bytes]]) -> tuple[list[Call], list[list[int]]]:
    """Return one call per partition that finds the bodies the feed entries refer to."""
    by_p: dict[int, list[int]] = {}
    for i, (fid, _) in enumerate(refs):
        by_p.setdefault(int(fid.partition("-")[0]), []).append(i)
    calls = []
    for p, idx in by_p.items():
        key_list: list[str] = []
        args: list[object] = []
        for i in idx:
            ts, _, ref = refs[i][1].decode().partition(" ")
            key = keys.bodies(p, keys.day_of(int(ts)))
            if key not in key_list:
                key_list.append(key)
            args += (key_list.index(key) + 1, ref)
        calls.append(Call(BODIES, key_list, args, keys.partition_slot(p)))
    return calls, list(by_p.values())


def _claim(rc: RedisCluster, name: str, consumer: str, budget: int,
           idle_ms: int) -> list[list[StreamEntry]]:
    """Take over entries delivered but unacknowledged for ``idle_ms`` (XAUTOCLAIM)."""
    out: list[list[StreamEntry]] = [[] for _ in range(P)]
    cursors = {p: "0-0" for p in range(P)}
    for _ in range(ROUNDS):
        if budget <= 0 or not cursors:
            break
        counts = _share(budget, sorted(cursors))
        pipe: ClusterPipeline = rc.pipeline(transaction=False)
        for p, c in counts.items():
            pipe.xautoclaim(keys.feed(p), name, consumer, idle_ms, cursors[p], count=c)
        for p, reply in zip(counts, _check(pipe.execute(raise_on_error=False), name),
                            strict=True):
            out[p] += reply[1]
            budget -= len(reply[1])
            nxt = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            if nxt == "0-0" or len(reply[1]) < counts[p]:
                del cursors[p]
            else:
                cursors[p] = nxt
    return out


def _read_new(rc: RedisCluster, name: str, consumer: str, budget: int) -> list[list[StreamEntry]]:
    """Read entries never delivered to the group (XREADGROUP >)."""
    out: list[list[StreamEntry]] = [[] for _ in range(P)]
    active = list(range(P))
    for _ in range(ROUNDS):
        if budget <= 0 or not active:
            break
        counts = _share(budget, active)
        pipe: ClusterPipeline = rc.pipeline(transaction=False)
        for p, c in counts.items():
            pipe.xreadgroup(name, consumer, {keys.feed(p): ">"}, count=c)
        for p, reply in zip(counts, _check(pipe.execute(raise_on_error=False), name),
                            strict=True):
            got = reply[0][1] if reply else []
            out[p] += got
            budget -= len(got)
            if len(got) < counts[p]:
                active.remove(p)
    return out


def _check(replies: list[Any], name: str) -> list[Any]:
    for reply in replies:
        if isinstance(reply, rx.ResponseError) and "NOGROUP" in str(reply):
            raise NotFound(f"extractor {name!r} does not exist; create it first")
        if isinstance(reply, Exception):
            raise reply
    return replies


def ack(rc: RedisCluster, name: str, feed_ids: list[str]) -> list[str]:
    """Acknowledge delivered entries; return the ids that were not pending (none acked).

    One ``XACK`` per id, so the answer can name each id it did not acknowledge: already
    acknowledged, never delivered, or unknown. A partition that cannot answer raises (the
    API says 503; acknowledging is idempotent, so the client resends the same ids).
    """
    parsed: list[tuple[int, str]] = []
    for fid in feed_ids:
        head, _, sid = fid.partition("-")
        if not (head.isascii() and head.isdigit()) or int(head) >= P or not sid:
            raise InvalidInput(f"ids: {fid!r} is not a feed id of this API", field="ids")
        parsed.append((int(head), sid))
    pipe: ClusterPipeline = rc.pipeline(transaction=False)
    for p, sid in parsed:
        pipe.xack(keys.feed(p), name, sid)
    replies = _check(pipe.execute(raise_on_error=False), name)
    return [fid for fid, r in zip(feed_ids, replies, strict=True) if r != 1]


LAG_SCAN = 1000  # entries counted per partition when Redis cannot tell the lag


def infos(rc: RedisCluster) -> dict[str, dict[str, int]]:
    """Return every extractor's lag (not yet delivered) and pending (not acknowledged).

    A partition that cannot answer (a failover) raises rather than being left out: a lag
    summed over the partitions that did answer would look small exactly when it is not.
    One ``XINFO GROUPS`` per partition serves all extractors. Redis 7.0 does not restore a
    group's read counter from the AOF, so after a restart ``XINFO GROUPS`` says lag nil until
    the group catches up; those partitions' lag is then counted from the stream (at most
    ``LAG_SCAN`` each, so a floor, never an overstatement).
    """
    pipe: ClusterPipeline = rc.pipeline(transaction=False)
    for p in range(P):
        pipe.xinfo_groups(keys.feed(p))
    out: dict[str, dict[str, int]] = {}
    unknown: dict[str, dict[int, bytes]] = {}
    replies = _absent_as(pipe.execute(raise_on_error=False), [])
    for p, reply in enumerate(_check(replies, "*")):
        for g in reply:
            name = g["name"].decode()
            acc = out.setdefault(name, {"lag": 0, "pending": 0, "partitions": 0})
            acc["partitions"] += 1
            acc["pending"] += g["pending"]
            if g.get("lag") is None:
                unknown.setdefault(name, {})[p] = g["last-delivered-id"]
            else:
                acc["lag"] += g["lag"]
    for name, last_ids in unknown.items():
        out[name]["lag"] += _count_after(rc, last_ids)
    return dict(sorted(out.items()))


def info(rc: RedisCluster, name: str) -> dict[str, int]:
    """Return one extractor's lag and pending (see ``infos``)."""
    found = infos(rc).get(name)
    if found is None:
        raise NotFound(f"extractor {name!r} does not exist")
    return found


def _count_after(rc: RedisCluster, last_ids: dict[int, bytes]) -> int:
    pipe: ClusterPipeline = rc.pipeline(transaction=False)
    for p, last in last_ids.items():
        start = last.decode() if isinstance(last, bytes) else str(last)
        pipe.xrange(keys.feed(p), min="(" + start, count=LAG_SCAN)
    return sum(len(r) for r in _check(pipe.execute(raise_on_error=False), "*"))


def delete(rc: RedisCluster, name: str) -> int:
    """Destroy the extractor's group on every feed; return on how many it existed."""
    pipe: ClusterPipeline = rc.pipeline(transaction=False)
    for p in range(P):
        pipe.xgroup_destroy(keys.feed(p), name)
    return sum(_check(_absent_as(pipe.execute(raise_on_error=False), 0), name))


def _absent_as(replies: list[Any], value: object) -> list[Any]:
    """Replace the errors that only say a feed was never written with ``value``."""
    return [value if isinstance(r, rx.ResponseError) and (
        "no such key" in str(r) or "requires the key to exist" in str(r)) else r
        for r in replies]


def oldest_waiting(rc: RedisCluster) -> dict[str, int]:
    """Return each extractor's oldest entry not yet acknowledged, as a ms timestamp.

    That is the older of the first entry past the group's last delivered id (never delivered)
    and the smallest pending id (delivered, not acknowledged). Entry ids are ``*`` ids, so
    their first part is the time the log was added. Extractors with nothing waiting are left
    out. Read by the consumer's scrape-time gauges (the age-based extraction alert).
    """
    pipe: ClusterPipeline = rc.pipeline(transaction=False)
    for p in range(P):
        pipe.xinfo_groups(keys.feed(p))
    asks: list[str] = []
    pipe2: ClusterPipeline = rc.pipeline(transaction=False)
    # As ``infos``: a partition that cannot answer raises (the scrape counts a failed read)
    # rather than leaving its entries out of the age.
    replies = _absent_as(pipe.execute(raise_on_error=False), [])
    for p, reply in enumerate(_check(replies, "*")):
        for g in reply:
            name = g["name"].decode()
            if g["pending"]:
                pipe2.xpending(keys.feed(p), name)
                asks.append(name)
            if g.get("lag") != 0:
                last = g["last-delivered-id"]
                start = last.decode() if isinstance(last, bytes) else str(last)
                pipe2.xrange(keys.feed(p), min="(" + start, count=1)
                asks.append(name)
    out: dict[str, int] = {}
    for name, reply in zip(asks, _check(pipe2.execute(raise_on_error=False), "*"),
                           strict=True):
        if isinstance(reply, dict):
            first = reply.get("min")
        elif isinstance(reply, list) and reply:
            first = reply[0][0]
        else:
            continue
        if first:
            ms = int((first.decode() if isinstance(first, bytes) else str(first)).split("-")[0])
            out[name] = min(out.get(name, ms), ms)
    return out
