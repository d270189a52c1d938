"""Issue 5's proofs: who may call what, bounds, rate limits, CSV safety, logs and headers.

The access matrix is keyed by Flask endpoint; ``test_every_endpoint_has_a_role`` compares
it with both apps' ``url_map``, so a new route cannot ship without a row here.
Redis ACLs (the apps' user refused FLUSHALL/CONFIG/KEYS, anonymous clients refused) are
proved in ``tests/test_launcher.py``; here only the wiring of the apps to that user.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from conftest import bearer
from payloads import now_ms, seed_log
from watchlog.cli.serve import gunicorn_options
from watchlog.consumer.export import csv_row, neutralize
from watchlog.logs import JsonFormatter
from watchlog.settings import Settings
from watchlog.store import Store
from watchlog.web.auth import Auth
from watchlog.web.common import SECURITY_HEADERS

DEVICE, OTHER_DEVICE = "watch_3", "watch_9"  # seed_log() writes for watch_3
TOKENS = {DEVICE: "dev-" + secrets.token_urlsafe(24),
          OTHER_DEVICE: "dev-" + secrets.token_urlsafe(24)}

# Endpoint -> the least role that may call it (open: no credentials needed).
ROLES = {
    "health.health": "open", "health.ready": "open", "health.prometheus": "open",
    "health.openapi": "open", "health.docs": "open",
    "admin.get_faults": "admin", "admin.put_faults": "admin", "admin.reset_faults": "admin",
    "ingest.post_activities": "ingest", "ingest.log_activity": "ingest",
    "queries.user_activities": "reader", "queries.user_summary": "reader",
    "queries.daily_report": "reader", "queries.export": "reader",
    "queries.activity_logs": "reader",
    "extraction.list_extractors": "reader", "extraction.create": "reader",
    "extraction.describe": "reader", "extraction.delete": "reader",
    "extraction.batch": "reader", "extraction.ack": "reader",
}
# Identities that pass each role; "open" lets everyone through.
ALLOWED = {"ingest": {"ingest", "device", "admin"}, "reader": {"reader", "admin"},
           "admin": {"admin"}}
IDENTITIES = ("none", "bad", "ingest", "device", "other_device", "reader", "admin")


def _fresh_log() -> dict[str, Any]:
    return {"json": seed_log(event_id="m" + secrets.token_hex(8))}


def _none() -> dict[str, Any]:
    return {}


# Endpoint -> (method, path, request kwargs, status when allowed).
REQUESTS: dict[str, tuple[str, str, Callable[[], dict[str, Any]], int]] = {
    "health.health": ("GET", "/health", _none, 200),
    "health.ready": ("GET", "/ready", _none, 200),
    "health.prometheus": ("GET", "/metrics", _none, 200),
    "health.openapi": ("GET", "/openapi.json", _none, 200),
    "health.docs": ("GET", "/docs", _none, 200),
    "admin.get_faults": ("GET", "/admin/faults", _none, 200),
    "admin.put_faults": ("PUT", "/admin/faults", lambda: {"json": {}}, 200),
    "admin.reset_faults": ("DELETE", "/admin/faults", _none, 200),
    "ingest.post_activities": ("POST", "/v1/activities", _fresh_log, 201),
    "ingest.log_activity": ("POST", "/log_activity", _fresh_log, 200),
    "queries.user_activities": ("GET", "/v1/users/7/activities", _none, 200),
    "queries.user_summary": ("GET", "/v1/users/7/summary", _none, 200),
    "queries.daily_report": ("GET", "/v1/reports/daily", _none, 200),
    "queries.export": ("GET", "/v1/activities/export", _none, 200),
    "queries.activity_logs": ("GET", "/activity_logs", _none, 404),  # empty store
    "extraction.list_extractors": ("GET", "/v1/extractors", _none, 200),
    # one extractor, created (then reset) by each allowed identity in turn
    "extraction.create": ("PUT", "/v1/extractors/m1?reset=true", lambda: {"json": {}}, 200),
    # none exists yet: only PUT creates one, every other call answers 404 (issue 13 item 9)
    "extraction.describe": ("GET", "/v1/extractors/m1", _none, 404),
    "extraction.delete": ("DELETE", "/v1/extractors/m1", _none, 404),
    "extraction.batch": ("POST", "/v1/extractors/m1/batches", _none, 404),
    "extraction.ack": ("POST", "/v1/extractors/m1/ack", lambda: {"json": {"ids": []}}, 404),
}
PRODUCER_ONLY = {"ingest.post_activities", "ingest.log_activity"}


def expected(endpoint: str, identity: str) -> int:
    role, ok = ROLES[endpoint], REQUESTS[endpoint][3]
    if role == "open":
        return ok
    if identity in ("none", "bad"):
        return 401
    return ok if identity in ALLOWED[role] else 403


def services_of(endpoint: str) -> list[str]:
    if endpoint in PRODUCER_ONLY:
        return ["producer"]
    if endpoint.startswith(("queries.", "extraction.")):
        return ["consumer"]
    return ["producer", "consumer"]


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "device-tokens"
    lines = ["# device_id sha256(token)"]
    lines += [f"{d} {hashlib.sha256(t.encode()).hexdigest()}" for d, t in TOKENS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def secured(cluster_settings: Settings, store: Store, tokens_file: Path) -> dict[str, Flask]:
    """Both apps with per-device tokens configured beside the shared keys."""
    from watchlog.consumer.app import create_app as consumer_app
    from watchlog.producer.app import create_app as producer_app

    s = cluster_settings.replace(device_tokens_file=str(tokens_file))
    return {"producer": producer_app(s, store), "consumer": consumer_app(s, store)}


@pytest.fixture(scope="module")
def identities(ingest_headers: dict[str, str], reader_headers: dict[str, str],
               admin_headers: dict[str, str]) -> dict[str, dict[str, str]]:
    return {"none": {}, "bad": bearer("not-a-token-" + secrets.token_hex(4)),
            "ingest": ingest_headers, "device": bearer(TOKENS[DEVICE]),
            "other_device": bearer(TOKENS[OTHER_DEVICE]), "reader": reader_headers,
            "admin": admin_headers}


def test_every_endpoint_has_a_role(secured: dict[str, Flask]) -> None:
    for service, app in secured.items():
        endpoints = {r.endpoint for r in app.url_map.iter_rules() if r.endpoint != "static"}
        mine = {e for e in ROLES if service in services_of(e)}
        assert endpoints == mine, f"{service}: give each new endpoint a role in ROLES"


@pytest.mark.parametrize("endpoint", sorted(ROLES))
def test_access_matrix(secured: dict[str, Flask], identities: dict[str, dict[str, str]],
                       endpoint: str) -> None:
    method, path, kwargs, _ = REQUESTS[endpoint]
    for service in services_of(endpoint):
        client = secured[service].test_client()
        got, want = {}, {}
        for who in IDENTITIES:
            r = client.open(path, method=method, headers=identities[who], **kwargs())
            got[who], want[who] = r.status_code, expected(endpoint, who)
            assert_secure_response(r)
        assert got == want, f"{service} {method} {path}"


def assert_secure_response(r: Any) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, name
    if r.status_code in (401, 403):
        assert r.is_json and set(r.json) >= {"error", "message"}
    if r.status_code == 401:
        assert r.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "token abc",
                                    "Bearer " + "x" * 10_000])
def test_auth_malformed_headers_are_401(producer, header: str) -> None:
    r = producer.post("/v1/activities", json=seed_log(), headers={"Authorization": header})
    assert r.status_code == 401 and r.json["error"] == "unauthorized"


def test_auth_scheme_is_case_insensitive(producer, ingest_headers) -> None:
    token = ingest_headers["Authorization"].split(" ", 1)[1]
    r = producer.post("/v1/activities", json=seed_log(), headers={"Authorization":
                                                                  f"bearer {token}"})
    assert r.status_code == 201


def test_device_token_batch_with_a_foreign_item_stores_nothing(secured, store) -> None:
    client = secured["producer"].test_client()
    batch = [seed_log(duration=1), seed_log(duration=2, device_id=OTHER_DEVICE)]
    r = client.post("/v1/activities", json=batch, headers=bearer(TOKENS[DEVICE]))
    assert r.status_code == 403 and r.json["field"] == "device_id"
    assert repr(DEVICE) in r.json["message"]
    assert stored(store) == []


def stored(store: Store) -> list[bytes]:
    now = now_ms()
    return list(store.export(now - 3 * 86400_000, now + 86400_000, None))


def test_secrets_are_kept_only_as_digests(cluster_settings: Settings, tokens_file) -> None:
    auth = Auth(cluster_settings.replace(device_tokens_file=str(tokens_file)))
    held = repr(vars(auth)) + repr(cluster_settings)
    for secret in (cluster_settings.ingest_token, cluster_settings.reader_key,
                   cluster_settings.admin_key, cluster_settings.redis_password, *TOKENS.values()):
        assert secret and secret not in held


@pytest.mark.parametrize("value", ["on", "", "yes", "of", "disabled", "OFFF"])
def test_auth_stays_on_unless_explicitly_off(value: str) -> None:
    assert Settings(auth=value).auth_enabled


def test_auth_on_without_any_key_refuses_everyone(store) -> None:
    from watchlog.consumer.app import create_app

    app = create_app(Settings(redis_url=store.settings.redis_url, auth="on"), store)
    r = app.test_client().get("/v1/reports/daily", headers=bearer(""))
    assert r.status_code == 401


def test_auth_off_is_warned_at_start_and_on_ready(cluster_settings, store, caplog) -> None:
    from watchlog.consumer.app import create_app

    with caplog.at_level(logging.WARNING):
        app = create_app(cluster_settings.replace(auth="off"), store)
    assert any("authentication is OFF" in r.getMessage() for r in caplog.records)
    client = app.test_client()
    assert "authentication is off" in client.get("/ready").json["warning"]
    assert client.get("/v1/reports/daily").status_code == 200
    assert "warning" not in create_app(cluster_settings, store).test_client().get(
        "/ready").json


# ---- bounds: every limit answers 413/422 with a message naming it ---------------------

@pytest.fixture(scope="module")
def tight(cluster_settings: Settings, store: Store) -> dict[str, Any]:
    from watchlog.consumer.app import create_app as consumer_app
    from watchlog.producer.app import create_app as producer_app

    s = cluster_settings.replace(max_body_bytes=4096, max_batch=3, max_page=50,
                                 max_range_days=2)
    return {"producer": producer_app(s, store).test_client(),
            "consumer": consumer_app(s, store).test_client()}


BOUNDS = [
    ("producer", "POST", "/v1/activities", {"data": b"[" + b" " * 5000 + b"]",
                                            "content_type": "application/json"},
     413, "4096 bytes"),
    ("producer", "POST", "/log_activity", {"data": b"{" + b" " * 5000 + b"}",
                                           "content_type": "application/json"},
     413, "4096 bytes"),
    ("producer", "POST", "/v1/activities", {"json": [seed_log(duration=i) for i in range(4)]},
     413, "WATCHLOG_MAX_BATCH"),
    ("producer", "POST", "/v1/activities", {"json": seed_log(device_id="w" * 65)},
     422, "device_id"),
    ("producer", "POST", "/v1/activities", {"json": seed_log(event_id="e" * 65)},
     422, "event_id"),
    ("consumer", "GET", "/v1/users/7/activities?limit=51", {}, 422, "between 1 and 50"),
    ("consumer", "GET", "/activity_logs?limit=51", {}, 422, "between 1 and 50"),
    ("consumer", "POST", "/v1/extractors/x/batches?max=51", {}, 422, "between 1 and 50"),
    ("consumer", "GET", "/v1/activities/export?from=2026-01-01&to=2026-01-10", {}, 422,
     "WATCHLOG_MAX_RANGE_DAYS"),
    ("consumer", "GET", "/v1/users/7/summary?from=2026-01-01&to=2026-01-10", {}, 422,
     "WATCHLOG_MAX_RANGE_DAYS"),
    ("consumer", "GET", "/v1/users/" + "u" * 65 + "/activities", {}, 422, "user_id"),
    ("consumer", "POST", "/v1/extractors/x/ack", {"json": {"ids": ["1-1"] * 501}}, 422,
     "at most 500"),
    ("consumer", "PUT", "/v1/extractors/x", {"data": b"{" + b" " * 5000 + b"}",
                                             "content_type": "application/json"},
     413, "4096 bytes"),
]


@pytest.mark.parametrize("service, method, path, kwargs, status, words", BOUNDS)
def test_bounds_answer_with_the_limit_named(tight, admin_headers, service: str, method: str,
                                            path: str, kwargs: dict, status: int,
                                            words: str) -> None:
    r = tight[service].open(path, method=method, headers=admin_headers, **kwargs)
    assert r.status_code == status, r.json
    assert words in r.json["message"]
    assert_secure_response(r)


def test_bounds_request_timeout_and_request_line_reach_gunicorn() -> None:
    opts = gunicorn_options(Settings(request_timeout=7), 5001)
    assert opts["timeout"] == 7 and opts["limit_request_line"] <= 8190


# ---- rate limiting --------------------------------------------------------------------

def test_rate_limit_is_per_token_with_retry_after(cluster_settings, store, ingest_headers,
                                                  admin_headers) -> None:
    from watchlog.producer.app import create_app

    client = create_app(cluster_settings.replace(rate_limit="2/minute"), store).test_client()
    statuses = [client.post("/v1/activities", json=seed_log(duration=i),
                            headers=ingest_headers).status_code for i in range(3)]
    assert statuses == [201, 201, 429]
    r = client.post("/log_activity", json=seed_log(), headers=ingest_headers)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.json["error"] == "rate_limited" and "2 per 1 minute" in r.json["message"]
    assert_secure_response(r)
    other = client.post("/v1/activities", json=seed_log(duration=9), headers=admin_headers)
    assert other.status_code == 201  # another token has its own budget
    assert client.get("/health").status_code == 200  # open routes are not limited


# ---- CSV export -----------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["=1+2", "+1+2", "-1+2", "@SUM(A1)", "\t=1", "\r=1",
                                  "=HYPERLINK(\"http://x\")"])
def test_csv_neutralises_formula_cells(cell: str) -> None:
    assert neutralize(cell) == "'" + cell
    doc = {f: "x" for f in ("event_id", "user_id", "activity_type", "timestamp",
                            "activity_status")}
    row = csv_row({**doc, "device_id": cell, "duration": 1, "distance": 2.0,
                   "heart_rate": None, "calories_burned": 3, "location": {"latitude": -1.5,
                                                                          "longitude": 2}})
    assert row[10] == "'" + cell and row[8] == -1.5  # numbers stay numbers


def test_csv_export_has_no_formula_cell(producer, consumer, ingest_headers,
                                        reader_headers) -> None:
    refused = producer.post("/v1/activities", json=seed_log(device_id="=cmd|'/c calc'!A0"),
                            headers=ingest_headers)
    assert refused.status_code == 422  # ids are [A-Za-z0-9] first: no formula gets in
    producer.post("/v1/activities", json=[seed_log(user_id=f"u{i}", duration=i)
                                          for i in range(5)], headers=ingest_headers)
    r = consumer.get("/v1/activities/export?format=csv", headers=reader_headers)
    rows = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert len(rows) == 6
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "@", "\t", "\r"))
            assert not cell.startswith("-") or float(cell) < 0


# ---- logs and headers -----------------------------------------------------------------

LAT, LON, USER = 12.345678, -98.765432, "secretuser42"


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # stricter than the services' INFO
    return caplog


class LeakyStore(Store):
    """A store whose bug raises with the payload in its message (the worst case)."""

    def ingest(self, events: list[Any]) -> list[bool]:
        raise ValueError(f"cannot store {[e.body for e in events]!r}")


def test_logs_carry_no_payload_token_or_coordinates(secured, identities, cluster_settings,
                                                    all_logs) -> None:
    from watchlog.producer.app import create_app

    clients = [secured["producer"].test_client(), secured["consumer"].test_client(),
               create_app(cluster_settings, LeakyStore(cluster_settings)).test_client()]
    for who in IDENTITIES:
        exercise(clients, identities[who])
    text = "\n".join(JsonFormatter("test").format(r) for r in all_logs.records)
    assert "unhandled ValueError on POST /v1/activities" in text  # the bug is logged...
    for needle in needles(identities):
        assert needle not in text  # ...but nothing it quoted


def exercise(clients: list[Any], headers: dict[str, str]) -> None:
    doc = seed_log(location={"latitude": LAT, "longitude": LON}, user_id=USER)
    for c in clients:
        c.post("/v1/activities", json=doc, headers=headers)
        c.post("/v1/activities", json=[doc, {**doc, "heart_rate": 999}], headers=headers)
        c.post("/log_activity", json={**doc, "duration": -1}, headers=headers)
        c.get(f"/v1/users/{USER}/activities", headers=headers)
        c.get("/v1/activities/export?format=csv", headers=headers)


def needles(identities: dict[str, dict[str, str]]) -> list[str]:
    tokens = [h["Authorization"].split(" ", 1)[1] for h in identities.values() if h]
    return [str(LAT), str(LON)[1:], USER, *tokens]


def test_live_service_logs_carry_no_payload_token_or_coordinates(
        live_services, state_dir, identities) -> None:
    import httpx

    clients = [httpx.Client(base_url=url, timeout=10) for url in live_services.values()]
    for who in IDENTITIES:
        exercise(clients, identities[who])
    for c in clients:
        c.close()
    for service in live_services:
        text = (state_dir / f"{service}.log").read_text()
        assert '"level": "info"' in text  # the JSON logs are there...
        for needle in needles(identities):
            assert needle not in text  # ...with nothing personal or secret in them


@pytest.mark.parametrize("method, path, kwargs, status", [
    ("GET", "/nowhere", {}, 404),
    ("DELETE", "/v1/activities", {}, 405),
    ("POST", "/v1/activities", {"data": "x", "content_type": "text/plain"}, 415),
    ("POST", "/v1/activities", {"data": "{", "content_type": "application/json"}, 400),
])
def test_security_headers_on_error_responses(producer, ingest_headers, method, path,
                                             kwargs, status) -> None:
    r = producer.open(path, method=method, headers=ingest_headers, **kwargs)
    assert r.status_code == status and r.is_json
    assert_secure_response(r)


def test_redis_apps_connect_as_the_restricted_acl_user(cluster_settings, store) -> None:
    """The apps' own connection is the ACL user that tests/test_launcher.py restricts."""
    assert cluster_settings.redis_username == "watchlog"
    for command in (("FLUSHALL",), ("CONFIG", "GET", "requirepass"), ("KEYS", "*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.rc.execute_command(*command, target_nodes=store.rc.get_primaries())


@pytest.mark.parametrize("method, query", [
    ("GET", "/v1/activities/export?from=99999999999999999&to=99999999999999999"),
    ("GET", "/v1/activities/export?from=" + "9" * 30 + "&to=" + "9" * 30),
    ("GET", "/v1/users/7/activities?from=99999999999999999&to=99999999999999999"),
    ("GET", "/v1/activities/export?from=0001-01-01T00:00:00%2B01:00&to=0001-01-01T01:00:00Z"),
    ("GET", "/v1/activities/export?from=9999-12-31T23:00:00-05:00&to=9999-12-31T23:30:00-05:00"),
    ("GET", "/v1/users/7/summary?to=0001-01-03"),
    ("GET", "/v1/users/7/summary?from=9999-12-30&to=9999-12-31"),
    ("GET", "/v1/reports/daily?date=0001-01-01"),
    ("GET", "/v1/users/7/activities?from=%C2%B2"),
    ("GET", "/v1/users/7/activities?to=%C2%B2%C2%B2"),
    ("GET", "/v1/users/7/activities?cursor=" + "A" * 5000),
    ("GET", "/v1/users/7/activities?cursor=e30"),
    ("POST", "/v1/extractors/x/batches?max=%C2%B2&consumer=" + "c" * 65),
    ("POST", "/v1/extractors/x/ack"),
])
def test_hostile_parameters_are_4xx_never_5xx(consumer, reader_headers, method: str,
                                              query: str) -> None:
    r = consumer.open(query, method=method, headers=reader_headers)
    assert r.status_code < 500 or r.status_code == 404, r.json
    assert r.is_json or r.status_code == 200


@pytest.mark.parametrize("line", ["watch_1 not-hex", "watch_1", "watch_1 abcd",
                                  "watch_1 " + "a" * 64 + " extra"])
def test_device_tokens_file_with_a_bad_line_stops_the_start(tmp_path, line: str) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\n\nwatch_0 " + "0" * 64 + "\n" + line + "\n")
    with pytest.raises(ValueError, match=r"tokens:4: expected") as e:
        Auth(Settings(device_tokens_file=str(path)))
    assert line.split()[-1] not in str(e.value) or line == "watch_1"


def test_key_rotation_accepts_old_and_new_until_the_old_is_removed(cluster_settings,
                                                                   store) -> None:
    from watchlog.consumer.app import create_app

    old, new = cluster_settings.reader_key, "new-" + secrets.token_urlsafe(16)
    during = create_app(cluster_settings.replace(reader_key=f"{old}, {new}"), store)
    after = create_app(cluster_settings.replace(reader_key=new), store)
    path = "/v1/reports/daily"
    assert [during.test_client().get(path, headers=bearer(k)).status_code
            for k in (old, new)] == [200, 200]
    assert [after.test_client().get(path, headers=bearer(k)).status_code
            for k in (old, new)] == [401, 200]
