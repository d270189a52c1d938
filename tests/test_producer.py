"""The producer API: statuses, batches, the seed endpoint, bounds and compression."""

from __future__ import annotations

import gzip
import json

import pytest

from payloads import seed_log

URL = "/v1/activities"


def test_producer_single_log_is_created_then_duplicate(producer, ingest_headers) -> None:
    doc = seed_log()
    r = producer.post(URL, json=doc, headers=ingest_headers)
    assert r.status_code == 201 and r.json["status"] == "created"
    again = producer.post(URL, json=doc, headers=ingest_headers)
    assert again.status_code == 200 and again.json == {"status": "duplicate",
                                                       "event_id": r.json["event_id"]}


def test_producer_batch_stores_valid_items_and_reports_each(producer, ingest_headers) -> None:
    doc = seed_log()
    batch = [doc, seed_log(heart_rate=999), seed_log(duration=1), doc]
    r = producer.post(URL, json=batch, headers=ingest_headers)
    assert r.status_code == 200
    body = r.json
    assert (body["created"], body["duplicate"], body["rejected"]) == (2, 1, 1)
    assert [i["status"] for i in body["items"]] == ["created", "rejected", "created",
                                                    "duplicate"]
    assert body["items"][1]["field"] == "heart_rate"


def test_producer_accepts_ndjson(producer, ingest_headers) -> None:
    lines = "\n".join(json.dumps(seed_log(duration=d)) for d in range(5))
    r = producer.post(URL, data=lines, content_type="application/x-ndjson",
                      headers=ingest_headers)
    assert r.status_code == 200 and r.json["created"] == 5


def test_producer_accepts_gzip_and_bounds_decompression(producer, ingest_headers) -> None:
    body = gzip.compress(json.dumps([seed_log(duration=d) for d in range(20)]).encode())
    r = producer.post(URL, data=body, content_type="application/json",
                      headers={**ingest_headers, "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json["created"] == 20
    bomb = gzip.compress(b"[" + b" " * (5 * 1024 * 1024) + b"]")
    r = producer.post(URL, data=bomb, content_type="application/json",
                      headers={**ingest_headers, "Content-Encoding": "gzip"})
    assert r.status_code == 413 and "limit" in r.json["message"]


@pytest.mark.parametrize("data, ctype, status", [
    ("{not json", "application/json", 400),
    ("[1, 2", "application/json", 400),
    ("hello", "text/plain", 415),
    ("[]", "application/json", 422),
    ('{"user_id": 1}', "application/json", 422),
    ("[1]", "application/json", 200),
])
def test_producer_bad_input_gets_a_json_error(producer, ingest_headers, data, ctype,
                                              status) -> None:
    r = producer.post(URL, data=data, content_type=ctype, headers=ingest_headers)
    assert r.status_code == status
    assert r.is_json and ("message" in r.json or "items" in r.json)


def test_producer_batch_over_the_limit_is_413(producer, ingest_headers) -> None:
    r = producer.post(URL, json=[seed_log()] * 1001, headers=ingest_headers)
    assert r.status_code == 413 and "1000" in r.json["message"]


def test_producer_seed_endpoint_keeps_its_responses(producer, ingest_headers) -> None:
    r = producer.post("/log_activity", json=seed_log(), headers=ingest_headers)
    assert r.status_code == 200 and r.json["message"] == "Activity logged successfully"
    doc = seed_log()
    del doc["heart_rate"]
    r = producer.post("/log_activity", json=doc, headers=ingest_headers)
    assert r.status_code == 400 and "heart_rate" in r.json["error"]


def test_producer_health_ready_metrics_openapi(producer) -> None:
    assert producer.get("/health").status_code == 200
    assert producer.get("/ready").json["status"] == "ready"
    assert b"watchlog_http_requests_total" in producer.get("/metrics").data
    spec = producer.get("/openapi.json").json
    assert spec["openapi"].startswith("3.") and "/v1/activities" in spec["paths"]
    assert "Activity" in spec["components"]["schemas"]
    assert b"/v1/activities" in producer.get("/docs").data


def test_producer_sets_security_headers(producer) -> None:
    r = producer.get("/health")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
