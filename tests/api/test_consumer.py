"""The consumer API read back against what the producer stored."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import datetime

from helpers import now_ms, post_all, random_logs, seed_log
from watchlog.core.schema import iso_ms


def test_consumer_user_activities_paginate_in_time_order(producer, consumer, ingest_headers,
                                                         reader_headers) -> None:
    docs = [seed_log(event_id=f"a{i}", timestamp=iso_ms(now_ms() - i * 60_000))
            for i in range(250)]
    post_all(producer, ingest_headers, docs)
    seen, cursor = [], ""
    while True:
        r = consumer.get(f"/v1/users/7/activities?limit=100&cursor={cursor}",
                         headers=reader_headers)
        assert r.status_code == 200
        seen += r.json["items"]
        cursor = r.json["next_cursor"]
        if not cursor:
            break
    assert [d["event_id"] for d in seen] == [f"a{i}" for i in reversed(range(250))]
    assert all("timestamp" in d for d in seen)


def test_consumer_summary_and_daily_report_read_aggregates(producer, consumer, ingest_headers,
                                                           reader_headers) -> None:
    post_all(producer, ingest_headers, [seed_log(), seed_log(duration=600, heart_rate=100),
                                        seed_log(user_id="bo", activity_type="cycling")])
    s = consumer.get("/v1/users/7/summary", headers=reader_headers).json
    assert s["total"]["count"] == 2 and s["total"]["duration"] == 2400
    assert s["total"]["avg_heart_rate"] == 125 and s["total"]["max_heart_rate"] == 150
    assert len(s["days"]) == 1 and s["days"][0]["by_type"]["running"]["count"] == 2
    day = seed_log()["timestamp"][:10]
    rep = consumer.get(f"/v1/reports/daily?date={day}", headers=reader_headers).json
    assert rep["active_users"] == 2 and rep["count"] == 3
    assert rep["by_type"]["cycling"]["count"] == 1


def test_consumer_export_streams_ndjson_and_csv_in_order(producer, consumer, ingest_headers,
                                                        reader_headers) -> None:
    docs = random_logs(700, users=40, rng=random.Random(4))
    post_all(producer, ingest_headers, docs)
    r = consumer.get("/v1/activities/export?format=ndjson", headers=reader_headers)
    rows = [json.loads(line) for line in r.data.splitlines()]
    assert sorted(d["event_id"] for d in rows) == sorted(d["event_id"] for d in docs)
    times = [datetime.fromisoformat(d["timestamp"]) for d in rows]  # "…15Z" sorts after "…15.6Z"
    assert times == sorted(times)
    r = consumer.get("/v1/activities/export?format=csv&activity_type=running",
                     headers=reader_headers)
    table = list(csv.DictReader(io.StringIO(r.data.decode())))
    assert len(table) == sum(d["activity_type"] == "running" for d in docs)


def test_consumer_seed_endpoint_is_bounded(producer, consumer, ingest_headers,
                                           reader_headers) -> None:
    r = consumer.get("/activity_logs", headers=reader_headers)
    assert r.status_code == 404 and r.json == {"message": "No activity logs found"}
    post_all(producer, ingest_headers, random_logs(150, users=5, rng=random.Random(9)))
    assert len(consumer.get("/activity_logs", headers=reader_headers).json) == 100
    assert len(consumer.get("/activity_logs?limit=7", headers=reader_headers).json) == 7
    assert consumer.get("/activity_logs?limit=5000", headers=reader_headers).status_code == 422


def test_consumer_extraction_acks_and_reports_lag(producer, consumer, ingest_headers,
                                                  reader_headers) -> None:
    post_all(producer, ingest_headers, random_logs(120, users=30, rng=random.Random(6)))
    assert consumer.put("/v1/extractors/rep", json={}, headers=reader_headers).json["lag"] == 120
    b = consumer.post("/v1/extractors/rep/batches?max=100", headers=reader_headers).json
    assert len(b["items"]) == 100 and all("feed_id" in i for i in b["items"])
    ack = consumer.post("/v1/extractors/rep/ack", json={"ids": [i["feed_id"] for i in b["items"]]},
                        headers=reader_headers)
    assert ack.json["acknowledged"] == 100 and ack.json["not_acked"] == []
    info = consumer.get("/v1/extractors/rep", headers=reader_headers).json
    assert (info["lag"], info["pending"]) == (20, 0)
    lag = b'watchlog_extraction_lag{extractor="rep",service="consumer"} 20.0'
    assert lag in consumer.get("/metrics").data
    # An ack that acknowledges fewer than it was sent says which, never a silent count.
    again = [b["items"][0]["feed_id"], "7-1-0"]
    ack = consumer.post("/v1/extractors/rep/ack", json={"ids": again}, headers=reader_headers)
    assert ack.status_code == 200
    assert (ack.json["acked"], ack.json["not_acked"]) == (0, again)


def test_consumer_rejects_bad_parameters_with_named_fields(consumer, reader_headers) -> None:
    for url, field in [("/v1/users/7/activities?from=nope", "from"),
                       ("/v1/users/7/activities?limit=0", "limit"),
                       ("/v1/users/7/activities?activity_type=flying", "activity_type"),
                       ("/v1/users/7/activities?cursor=xyz", "cursor"),
                       ("/v1/activities/export?from=2020-01-01&to=2026-01-01", "to"),
                       ("/v1/reports/daily?date=yesterday", "date")]:
        r = consumer.get(url, headers=reader_headers)
        assert r.status_code == 422 and r.json["field"] == field, url
