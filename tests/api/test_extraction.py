"""Extractors and the summary over HTTP, on a real cluster: what the README promises of them.

Each promise is checked with a contrast that shows the check can fail: ``latest`` against
``earliest``, a deleted extractor against one left alone, a short visibility timeout against
a long one, a narrow summary range against a wide one.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from helpers import post_all, random_logs, seed_log
from watchlog.core import keys
from watchlog.core.schema import iso_ms
from watchlog.launcher.redis.cluster import LocalCluster

X = "/v1/extractors"


def drain(consumer: Any, headers: dict[str, str], name: str, **params: Any) -> list[dict]:
    """Take and acknowledge batches until one comes back empty; return every item."""
    got: list[dict] = []
    query = "&".join(f"{k}={v}" for k, v in {"max": 500, **params}.items())
    while True:
        r = consumer.post(f"{X}/{name}/batches?{query}", headers=headers)
        assert r.status_code == 200, r.json
        items = r.json["items"]
        if not items:
            return got
        got += items
        ack = consumer.post(f"{X}/{name}/ack", json={"ids": [i["feed_id"] for i in items]},
                            headers=headers)
        assert ack.status_code == 200 and ack.json["acknowledged"] == len(items)


def test_extractor_start_latest_skips_what_was_stored_before(producer, consumer,
                                                             ingest_headers,
                                                             reader_headers) -> None:
    before = random_logs(50, users=10, rng=random.Random(1))
    post_all(producer, ingest_headers, before)
    for name, start in (("from-now", "latest"), ("from-start", "earliest")):
        r = consumer.put(f"{X}/{name}", json={"start": start}, headers=reader_headers)
        assert r.status_code in (200, 201) and r.json["pending"] == 0
    assert consumer.get(f"{X}/from-now", headers=reader_headers).json["lag"] == 0
    assert drain(consumer, reader_headers, "from-now") == []
    after = random_logs(30, users=10, rng=random.Random(2))
    for d in after:
        d["event_id"] = "late-" + d["event_id"]
    post_all(producer, ingest_headers, after)
    late = {i["event_id"] for i in drain(consumer, reader_headers, "from-now")}
    assert late == {d["event_id"] for d in after}
    # Control: the same check on an extractor from the earliest log sees the older ones too.
    everything = {i["event_id"] for i in drain(consumer, reader_headers, "from-start")}
    assert everything == {d["event_id"] for d in before + after}


def test_extractor_rejects_an_unknown_start(consumer, reader_headers) -> None:
    r = consumer.put(f"{X}/bad-start", json={"start": "yesterday"}, headers=reader_headers)
    assert r.status_code == 422 and r.json["field"] == "start"


def groups_named(cluster: LocalCluster, name: str) -> int:
    """How many partition feeds hold a consumer group called ``name`` (read in Redis)."""
    rc = cluster.admin_client()
    try:
        found = 0
        for p in range(keys.PARTITIONS):
            groups = rc.xinfo_groups(keys.feed(p)) if rc.exists(keys.feed(p)) else []
            found += any(g["name"] in (name, name.encode()) for g in groups)
        return found
    finally:
        rc.close()


def test_extractor_delete_removes_its_cursor_and_pending(producer, consumer, ingest_headers,
                                                         reader_headers,
                                                         cluster: LocalCluster) -> None:
    docs = random_logs(200, users=40, rng=random.Random(3))
    post_all(producer, ingest_headers, docs)
    for name in ("doomed", "kept"):
        assert consumer.put(f"{X}/{name}", json={}, headers=reader_headers).status_code in (
            200, 201)
        first = consumer.post(f"{X}/{name}/batches?max=120", headers=reader_headers).json
        ids = [i["feed_id"] for i in first["items"]]
        assert len(ids) == 120
        consumer.post(f"{X}/{name}/ack", json={"ids": ids[:70]}, headers=reader_headers)
        info = consumer.get(f"{X}/{name}", headers=reader_headers).json
        assert (info["lag"], info["pending"]) == (80, 50)
    assert groups_named(cluster, "doomed") == keys.PARTITIONS
    r = consumer.delete(f"{X}/doomed", headers=reader_headers)
    assert r.status_code == 200 and r.json == {"name": "doomed", "deleted": True}
    assert groups_named(cluster, "doomed") == 0  # cursor and pending entries live in the group
    assert consumer.get(f"{X}/doomed", headers=reader_headers).status_code == 404
    listed = {e["name"] for e in consumer.get(X, headers=reader_headers).json["items"]}
    assert listed == {"kept"}
    # Created again, it starts over: no cursor (everything is lag), nothing pending.
    assert consumer.put(f"{X}/doomed", json={}, headers=reader_headers).status_code in (200, 201)
    info = consumer.get(f"{X}/doomed", headers=reader_headers).json
    assert (info["lag"], info["pending"]) == (200, 0)
    assert len(drain(consumer, reader_headers, "doomed")) == 200
    # Control: the extractor left alone kept both its cursor and its pending entries.
    kept = consumer.get(f"{X}/kept", headers=reader_headers).json
    assert (kept["lag"], kept["pending"]) == (80, 50)
    assert groups_named(cluster, "kept") == keys.PARTITIONS


def test_extractor_visibility_timeout_parameter_is_honoured(producer, consumer,
                                                            ingest_headers,
                                                            reader_headers) -> None:
    """A call takes back the entries unacknowledged for longer than its visibility_timeout.

    The parameter belongs to the call that reclaims (XAUTOCLAIM's idle time), whoever the
    entries were delivered to: at the same moment, on the same pending entries, a call with
    3600 (and one with the server's default, 30 s) takes nothing back, a call with 1 takes
    back all of them.
    """
    post_all(producer, ingest_headers, random_logs(30, users=20, rng=random.Random(5)))
    assert consumer.put(f"{X}/vis", json={}, headers=reader_headers).status_code in (200, 201)

    def take(consumer_name: str, visibility: int | None) -> dict:
        query = f"max=30&consumer={consumer_name}"
        if visibility is not None:
            query += f"&visibility_timeout={visibility}"
        r = consumer.post(f"{X}/vis/batches?{query}", headers=reader_headers)
        assert r.status_code == 200
        return r.json  # type: ignore[no-any-return]

    taken = {i["feed_id"] for i in take("a", 1)["items"]}
    assert len(taken) == 30
    assert take("b", 1) == {"items": [], "redelivered": 0}  # not idle for 1 s yet
    time.sleep(1.2)
    assert take("b", 3600) == {"items": [], "redelivered": 0}
    assert take("b", None) == {"items": [], "redelivered": 0}  # WATCHLOG_EXTRACT_VISIBILITY_S
    again = take("b", 1)
    assert again["redelivered"] == 30 and {i["feed_id"] for i in again["items"]} == taken
    r = consumer.post(f"{X}/vis/batches?visibility_timeout=0", headers=reader_headers)
    assert r.status_code == 422 and r.json["field"] == "visibility_timeout"


def test_summary_honours_from_and_to(producer, consumer, ingest_headers,
                                     reader_headers) -> None:
    today = datetime.now(UTC).date()
    noon = datetime.combine(today, datetime.min.time(), UTC) + timedelta(hours=12)
    docs = []
    for ago, n in ((5, 1), (3, 2), (1, 4)):
        ts = int((noon - timedelta(days=ago)).timestamp() * 1000)
        docs += [seed_log(event_id=f"s{ago}-{i}", timestamp=iso_ms(ts + i * 60_000),
                          duration=100 * ago) for i in range(n)]
    post_all(producer, ingest_headers, docs)

    def summary(**q: str) -> dict:
        query = "&".join(f"{k}={v}" for k, v in q.items())
        r = consumer.get(f"/v1/users/7/summary?{query}", headers=reader_headers)
        assert r.status_code == 200, r.json
        return r.json  # type: ignore[no-any-return]

    day = {ago: str(today - timedelta(days=ago)) for ago in (6, 5, 4, 3, 2, 1)}
    narrow = summary(**{"from": day[4], "to": day[2]})
    assert (narrow["from"], narrow["to"]) == (day[4], day[2])
    assert narrow["total"]["count"] == 2 and narrow["total"]["duration"] == 600
    assert [d["date"] for d in narrow["days"]] == [day[3]]
    # Control: a range around all three days counts all of them, each under its own date.
    wide = summary(**{"from": day[6], "to": day[1]})
    assert wide["total"]["count"] == 7 and wide["total"]["duration"] == 500 + 600 + 400
    assert [d["date"] for d in wide["days"]] == [day[5], day[3], day[1]]
    assert summary(**{"from": day[1], "to": day[1]})["total"]["count"] == 4
    r = consumer.get(f"/v1/users/7/summary?from={day[1]}&to={day[3]}", headers=reader_headers)
    assert r.status_code == 422 and r.json["field"] == "from"
