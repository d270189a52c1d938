"""The lean single-log path (api/producer/fast.py) answers as the Flask path does.

Each case sends the same kind of request to two producers over one store: the app as
served (the lean path in front of Flask) and the app built with ``lean=False`` (every
request through Flask). Status, headers, JSON bodies and the deltas of every counted
metric must agree; the logs each one stores must be read back as sent. A Flask
``before_request`` hook on the lean app shows which requests the lean path answered itself.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from helpers import bearer, now_ms, seed_log
from watchlog.api.producer import fast
from watchlog.api.producer.app import create_app
from watchlog.core.settings import Settings
from watchlog.store import Store

URL = "/v1/activities"
DEVICE, TOKEN = "watch-lean", "lean-device-token"
_ids = itertools.count()


def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every watchlog counter, histogram count and gauge (not the timing buckets and sums)."""
    out = {}
    for metric in REGISTRY.collect():
        for s in metric.samples:
            if s.name.startswith("watchlog_") and (
                    s.name.endswith(("_total", "_count")) or metric.type == "gauge"
                    or s.name.startswith("watchlog_batch_size")):
                if s.name.startswith("watchlog_redis_") or "latency" in s.name:
                    continue  # the store's own timings: counted alike, but also by readiness
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def delta(before: dict, after: dict) -> dict:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def fresh(**changes: Any) -> dict[str, Any]:
    return seed_log(event_id=f"lean-{next(_ids)}-{now_ms()}", **changes)


# A case: (name, request builder). A builder gets a fresh log and returns post() kwargs.
Headers = dict[str, str]
CASES: list[tuple[str, Callable[[dict[str, Any], Headers, Headers], dict[str, Any]]]] = [
    ("created", lambda doc, ing, _: {"json": doc, "headers": ing}),
    ("charset", lambda doc, ing, _: {"data": _raw(doc), "headers": ing,
                                     "content_type": "application/json; charset=utf-8"}),
    ("invalid field", lambda doc, ing, _: {"json": {**doc, "heart_rate": 999}, "headers": ing}),
    ("missing field", lambda doc, ing, _: {"json": {k: v for k, v in doc.items()
                                                    if k != "device_id"}, "headers": ing}),
    ("malformed", lambda doc, ing, _: {"data": b'{"user_id": ', "headers": ing,
                                       "content_type": "application/json"}),
    ("not an object", lambda doc, ing, _: {"data": b'"a string"', "headers": ing,
                                           "content_type": "application/json"}),
    ("batch", lambda doc, ing, _: {"json": [doc, {**doc, "duration": 5}], "headers": ing}),
    ("too old", lambda doc, ing, _: {"json": {**doc, "timestamp": "2001-01-01T00:00:00Z"},
                                     "headers": ing}),
    ("text/plain", lambda doc, ing, _: {"data": _raw(doc), "headers": ing,
                                        "content_type": "text/plain"}),
    ("no credentials", lambda doc, ing, _: {"json": doc}),
    ("wrong token", lambda doc, ing, _: {"json": doc, "headers": bearer("nope")}),
    ("reader key", lambda doc, _, rd: {"json": doc, "headers": rd}),
    ("device, own log", lambda doc, *_: {"json": {**doc, "device_id": DEVICE, "user_id": 7},
                                        "headers": bearer(TOKEN)}),
    ("device, other user", lambda doc, *_: {"json": {**doc, "device_id": DEVICE, "user_id": 8},
                                           "headers": bearer(TOKEN)}),
    ("device, other device", lambda doc, *_: {"json": {**doc, "device_id": "x", "user_id": 7},
                                             "headers": bearer(TOKEN)}),
]


def _raw(doc: dict[str, Any]) -> bytes:
    import json

    return json.dumps(doc).encode()


@pytest.fixture
def apps(cluster_settings: Settings, store: Store, tmp_path: Path) -> dict[str, Any]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{DEVICE} {hashlib.sha256(TOKEN.encode()).hexdigest()} 7\n")
    s = cluster_settings.replace(device_tokens_file=str(tokens))
    lean, flask_only = create_app(s, store), create_app(s, store, lean=False)
    through_flask: list[str] = []

    @lean.before_request
    def seen() -> None:
        through_flask.append("x")

    return {"lean": lean.test_client(), "flask": flask_only.test_client(),
            "through_flask": through_flask}


def answer(client: Any, kwargs: dict[str, Any]) -> tuple[Any, dict, dict]:
    before = counted()
    r = client.post(URL, **kwargs)
    headers = {k: v for k, v in r.headers.items() if k != "Content-Length"}
    body = r.get_json(silent=True)
    if isinstance(body, dict) and "event_id" in body:
        body = {**body, "event_id": "<id>"}
    if isinstance(body, dict) and "items" in body:
        body = {**body, "items": [{**i, "event_id": "<id>"} for i in body["items"]]}
    return (r.status_code, headers, body), delta(before, counted()), r.get_json(silent=True)


def differences(apps: dict[str, Any], build: Callable[..., dict[str, Any]],
                ingest: Headers, reader: Headers) -> list[str]:
    """What differs between the two paths for one kind of request (empty: nothing)."""
    out = []
    seen = {}
    for name in ("lean", "flask"):
        seen[name] = answer(apps[name], build(fresh(), ingest, reader))
    (lr, lm, _), (fr, fm, _) = seen["lean"], seen["flask"]
    if lr != fr:
        out.append(f"response: lean {lr} / flask {fr}")
    if lm != fm:
        out.append(f"metrics: lean {lm} / flask {fm}")
    return out


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_lean_path_answers_as_flask_does(apps, ingest_headers, reader_headers,
                                         case: str) -> None:
    build = dict(CASES)[case]
    assert differences(apps, build, ingest_headers, reader_headers) == []


def test_lean_path_answers_the_common_case_itself(apps, ingest_headers, consumer,
                                                  reader_headers) -> None:
    """A valid single log never reaches Flask on the lean app; the other cases all do."""
    lean, through = apps["lean"], apps["through_flask"]
    doc = fresh(user_id="lean-u1")
    r = lean.post(URL, json=doc, headers=ingest_headers)
    again = lean.post(URL, json=doc, headers=ingest_headers)
    assert (r.status_code, again.status_code) == (201, 200) and through == []
    assert again.get_json() == {"status": "duplicate", "event_id": doc["event_id"]}
    # stored as sent: the consumer reads it back
    page = consumer.get("/v1/users/lean-u1/activities", headers=reader_headers).get_json()
    assert [a["event_id"] for a in page["items"]] == [doc["event_id"]]
    lean.post(URL, json={**fresh(), "heart_rate": 999}, headers=ingest_headers)
    lean.post(URL, json=[fresh()], headers=ingest_headers)
    assert len(through) == 2


def test_a_rate_limited_log_is_refused_alike_and_counted_once(cluster_settings, store,
                                                              ingest_headers) -> None:
    """Limit 4/minute: the third request's invalid log (handed from the lean path to Flask)
    is counted once, so the fourth is still allowed and the fifth refused, on both paths."""
    s = cluster_settings.replace(rate_limit="4/minute")
    for app in (create_app(s, store), create_app(s, store, lean=False)):
        assert limited_codes(app, ingest_headers) == [201, 201, 422, 201, 429]


def limited_codes(app: Any, headers: Headers) -> list[int]:
    """Five posts, the third an invalid log, under a limit of 4/minute."""
    client = app.test_client()
    return [client.post(URL, json=doc, headers=headers).status_code
            for doc in (fresh(), fresh(), {**fresh(), "heart_rate": 999}, fresh(), fresh())]


def test_the_rate_test_catches_a_lean_path_that_counts_twice(
        cluster_settings, store, ingest_headers, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: when Flask cannot see that the lean path counted the request (the
    environ says so under another name), the invalid log is counted twice: the fourth post
    is refused."""
    monkeypatch.setattr(fast, "COUNTED", "watchlog.counted_elsewhere")
    app = create_app(cluster_settings.replace(rate_limit="4/minute"), store)
    assert limited_codes(app, ingest_headers) == [201, 201, 422, 429, 429]


def _faulted_answers(settings: Settings, store: Store, headers: dict[str, str]) -> list[int]:
    """The statuses of one new log POSTed to the lean and the Flask-only app, with every
    request given an injected 503."""
    s = settings.replace(fault_abort_p=1.0, fault_abort_status=503)
    out = []
    for app in (create_app(s, store), create_app(s, store, lean=False)):
        r = app.test_client().post(URL, json=fresh(), headers=headers)
        assert r.status_code != 503 or "injected" in r.get_json()["message"]
        out.append(r.status_code)
    return out


def test_an_injected_fault_goes_through_flask(cluster_settings, store, ingest_headers) -> None:
    """With a fault that may apply, the lean path steps aside: the fault is injected."""
    assert _faulted_answers(cluster_settings, store, ingest_headers) == [503, 503]


def test_a_lean_path_that_ignores_faults_is_caught(cluster_settings, store, ingest_headers,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: a lean path that takes the request whatever the faults stores it
    (201) where the injected fault was due."""
    components = fast.LeanIngest._components

    class Deaf:
        def quiet(self, route: str) -> bool:
            return True

    def careless(self: fast.LeanIngest) -> Any:
        settings, auth, _faults, limit, store, red = components(self)
        return settings, auth, Deaf(), limit, store, red

    monkeypatch.setattr(fast.LeanIngest, "_components", careless)
    assert _faulted_answers(cluster_settings, store, ingest_headers) == [201, 503]


def test_the_comparison_catches_a_lean_path_that_forgets_a_counter(
        apps, ingest_headers, reader_headers, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: a lean path that does not count its logs is caught."""
    monkeypatch.setattr(fast, "store_logs", lambda into, events, _n: into.ingest(events))
    found = differences(apps, dict(CASES)["created"], ingest_headers, reader_headers)
    assert found and "watchlog_logs_ingested_total" in found[0]


def test_the_comparison_catches_a_lean_path_that_answers_differently(
        apps, ingest_headers, reader_headers, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: a lean path whose answer differs (here: 200 for a new log) is caught."""
    monkeypatch.setitem(fast._STATUS, 201, "200 OK")
    found = differences(apps, dict(CASES)["created"], ingest_headers, reader_headers)
    assert found and found[0].startswith("response")
