"""Issue 5's proofs: who may call what, bounds, rate limits, CSV safety, logs and headers.

The access matrix is keyed by Flask endpoint; ``test_every_endpoint_has_a_role`` compares
it with both apps' ``url_map``, so a new route cannot ship without a row here.
Redis ACLs (the apps' user refused FLUSHALL/CONFIG/KEYS, anonymous clients refused) are
proved in ``tests/launcher/test_launcher.py``; here only the wiring of the apps to that user.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from helpers import bearer, json_of, now_ms, seed_log
from watchlog.api.auth import Auth
from watchlog.api.consumer.export import csv_row, neutralize
from watchlog.api.openapi import DOCS_CSP
from watchlog.api.security import SECURITY_HEADERS
from watchlog.cli.serve import gunicorn_options
from watchlog.core.logs import JsonFormatter
from watchlog.core.schema import Event
from watchlog.core.settings import Settings
from watchlog.store import Store

DEVICE, OTHER_DEVICE = "watch_3", "watch_9"  # seed_log() writes for watch_3 and user 7
TOKENS = {DEVICE: "dev-" + secrets.token_urlsafe(24),
          OTHER_DEVICE: "dev-" + secrets.token_urlsafe(24)}
# A token of a watch_3 that belongs to user 8: seed_log() is a log of another user for it.
FOREIGN_USER_TOKEN = "dev-" + secrets.token_urlsafe(24)
OWNERS = {DEVICE: "7", OTHER_DEVICE: "9"}

# Endpoint -> the least role that may call it (open: no credentials needed).
ROLES = {
    "health.health": "open", "health.ready": "open", "health.prometheus": "open",
    "health.openapi": "open", "health.docs": "open", "health.docs_init": "open",
    "health.docs_asset": "open",
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
IDENTITIES = ("none", "bad", "ingest", "device", "other_device", "foreign_user", "reader",
              "admin")


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
    "health.docs_init": ("GET", "/docs/init.js", _none, 200),
    "health.docs_asset": ("GET", "/docs/static/swagger-ui.css", _none, 200),
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


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "device-tokens"
    lines = ["# device_id sha256(token) user_id[,user_id...]"]
    lines += [f"{d} {sha(t)} {OWNERS[d]}" for d, t in TOKENS.items()]
    lines.append(f"{DEVICE} {sha(FOREIGN_USER_TOKEN)} 8")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def secured(cluster_settings: Settings, store: Store, tokens_file: Path) -> dict[str, Flask]:
    """Both apps with per-device tokens configured beside the shared keys."""
    from watchlog.api.consumer.app import create_app as consumer_app
    from watchlog.api.producer.app import create_app as producer_app

    s = cluster_settings.replace(device_tokens_file=str(tokens_file))
    return {"producer": producer_app(s, store), "consumer": consumer_app(s, store)}


@pytest.fixture(scope="module")
def identities(ingest_headers: dict[str, str], reader_headers: dict[str, str],
               admin_headers: dict[str, str]) -> dict[str, dict[str, str]]:
    return {"none": {}, "bad": bearer("not-a-token-" + secrets.token_hex(4)),
            "ingest": ingest_headers, "device": bearer(TOKENS[DEVICE]),
            "other_device": bearer(TOKENS[OTHER_DEVICE]),
            "foreign_user": bearer(FOREIGN_USER_TOKEN), "reader": reader_headers,
            "admin": admin_headers}


def test_every_endpoint_has_a_role(secured: dict[str, Flask]) -> None:
    for service, app in secured.items():
        # The reports page signs in with a session cookie, not a bearer key: its routes
        # (reports.*) are proved in tests/api/test_reports_page.py.
        endpoints = {r.endpoint for r in app.url_map.iter_rules()
                     if r.endpoint != "static" and not r.endpoint.startswith("reports.")}
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
        if name == "Content-Security-Policy" and r.request.path.startswith("/docs"):
            value = DOCS_CSP  # Swagger UI: its scripts and styles, from this origin only
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


def test_device_token_batch_with_another_users_item_stores_nothing(secured, store) -> None:
    client = secured["producer"].test_client()
    batch = [seed_log(duration=1), seed_log(duration=2, user_id="u-else")]
    r = client.post("/v1/activities", json=batch, headers=bearer(TOKENS[DEVICE]))
    assert r.status_code == 403 and r.json["field"] == "user_id"
    assert r.json["error"] == "forbidden" and "its owner (7)" in r.json["message"]
    assert stored(store) == []


def device_app(settings: Settings, store: Store, path: Path, lines: list[str]) -> Any:
    from watchlog.api.producer.app import create_app

    path.write_text("\n".join(lines) + "\n")
    return create_app(settings.replace(device_tokens_file=str(path)), store).test_client()


@pytest.mark.parametrize("route", ["/v1/activities", "/log_activity"])
@pytest.mark.parametrize("binding", ["owner", "any_user"])
def test_device_cannot_claim_another_users_event_id(cluster_settings, store, consumer,
                                                    reader_headers, tmp_path, route: str,
                                                    binding: str) -> None:
    """Watch A (user u-a) tries to take an event id of user u-b before u-b's watch sends it.

    The idempotency set is per user-day (keys.user_index), so the only way to claim u-b's
    id is to write for u-b; the binding refuses that. Negative control: a device line with
    ``*`` (the binding off) lets the attack through and u-b's real log becomes a duplicate.
    """
    token_a, token_b = "a-" + secrets.token_urlsafe(16), "b-" + secrets.token_urlsafe(16)
    client = device_app(cluster_settings, store, tmp_path / "tokens", [
        f"watch_a {sha(token_a)} {'u-a' if binding == 'owner' else '*'}",
        f"watch_b {sha(token_b)} u-b"])
    eid = "e-" + secrets.token_hex(6)
    mine = client.post(route, json=seed_log(user_id="u-a", device_id="watch_a", event_id=eid),
                       headers=bearer(token_a))
    attack = client.post(route, json=seed_log(user_id="u-b", device_id="watch_a",
                                              event_id=eid, duration=1),
                         headers=bearer(token_a))
    real = client.post("/v1/activities", json=seed_log(user_id="u-b", device_id="watch_b",
                                                       event_id=eid, duration=2),
                       headers=bearer(token_b))
    assert mine.status_code in (200, 201)  # its own user's id: no effect on u-b's scope
    got = consumer.get("/v1/users/u-b/activities", headers=reader_headers).json["items"]
    if binding == "owner":
        assert attack.status_code == 403 and attack.json["field"] == "user_id"
        assert real.status_code == 201 and real.json["status"] == "created"
        assert [(i["event_id"], i["device_id"]) for i in got] == [(eid, "watch_b")]
    else:
        assert attack.status_code in (200, 201)
        assert real.status_code == 200 and real.json["status"] == "duplicate"
        assert [(i["event_id"], i["device_id"]) for i in got] == [(eid, "watch_a")]


def test_device_line_without_user_is_refused_and_warned(cluster_settings, store, tmp_path,
                                                        caplog) -> None:
    """The older two-field line still loads, but binds the device to nobody (fail closed)."""
    token = "old-" + secrets.token_urlsafe(16)
    with caplog.at_level(logging.WARNING):
        client = device_app(cluster_settings, store, tmp_path / "tokens",
                            ["# device_id sha256(token)", f"{DEVICE} {sha(token)}"])
    assert any("lines 2 name no user_id" in r.getMessage() for r in caplog.records)
    r = client.post("/v1/activities", json=seed_log(), headers=bearer(token))
    assert r.status_code == 403 and r.json["field"] == "user_id"
    assert "bound to no user" in r.json["message"]
    assert stored(store) == []


def test_device_bound_to_several_users_writes_for_each_only(cluster_settings, store,
                                                            tmp_path) -> None:
    token = "fam-" + secrets.token_urlsafe(16)
    client = device_app(cluster_settings, store, tmp_path / "tokens",
                        [f"{DEVICE} {sha(token)} 7,u-kid"])
    statuses = [client.post("/v1/activities", json=seed_log(user_id=u, duration=i),
                            headers=bearer(token)).status_code
                for i, u in enumerate([7, "7", "u-kid", "u-other", 8])]
    assert statuses == [201, 201, 201, 403, 403]  # 7 and "7" are one user, as stored


def stored(store: Store) -> list[bytes]:
    now = now_ms()
    return list(store.export(now - 3 * 86400_000, now + 86400_000, None))


def test_secrets_are_kept_only_as_digests(cluster_settings: Settings, tokens_file) -> None:
    auth = Auth(cluster_settings.replace(device_tokens_file=str(tokens_file)))
    held = repr(vars(auth)) + repr(cluster_settings)
    for secret in (cluster_settings.ingest_token, cluster_settings.reader_key,
                   cluster_settings.admin_key, cluster_settings.redis_password, *TOKENS.values(),
                   FOREIGN_USER_TOKEN):
        assert secret and secret not in held


@pytest.mark.parametrize("value", ["on", "", "yes", "of", "disabled", "OFFF"])
def test_auth_stays_on_unless_explicitly_off(value: str) -> None:
    assert Settings.from_env({"WATCHLOG_AUTH": value}).auth_enabled


def test_auth_on_without_any_key_refuses_everyone(store) -> None:
    from watchlog.api.consumer.app import create_app

    app = create_app(Settings(redis_url=store.settings.redis_url, auth="on"), store)
    r = app.test_client().get("/v1/reports/daily", headers=bearer(""))
    assert r.status_code == 401


def test_auth_off_is_warned_at_start_and_on_ready(cluster_settings, store, caplog) -> None:
    from watchlog.api.consumer.app import create_app

    with caplog.at_level(logging.WARNING):
        app = create_app(cluster_settings.replace(auth="off"), store)
    assert any("authentication is OFF" in r.getMessage() for r in caplog.records)
    client = app.test_client()
    assert "authentication is off" in json_of(client.get("/ready"))["warning"]
    assert client.get("/v1/reports/daily").status_code == 200
    assert "warning" not in json_of(create_app(cluster_settings, store).test_client().get(
        "/ready"))


# ---- bounds: every limit answers 413/422 with a message naming it ---------------------

@pytest.fixture(scope="module")
def tight(cluster_settings: Settings, store: Store) -> dict[str, Any]:
    from watchlog.api.consumer.app import create_app as consumer_app
    from watchlog.api.producer.app import create_app as producer_app

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
    from watchlog.api.producer.app import create_app

    client = create_app(cluster_settings.replace(rate_limit="2/minute"), store).test_client()
    statuses = [client.post("/v1/activities", json=seed_log(duration=i),
                            headers=ingest_headers).status_code for i in range(3)]
    assert statuses == [201, 201, 429]
    r = client.post("/log_activity", json=seed_log(), headers=ingest_headers)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert json_of(r)["error"] == "rate_limited"
    assert "2 per 1 minute" in json_of(r)["message"]
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


# Text cells a spreadsheet would run, stored below the schema (which refuses them at the
# door: ids start with [A-Za-z0-9]), so that the export itself is what is under test.
FORMULAS = {"device_id": "=cmd|' /C calc'!A0", "user_id": "@SUM(A1:A9)",
            "event_id": "+HYPERLINK(evil)"}


def formula_cells(rows: list[list[str]]) -> list[str]:
    """The cells of CSV data rows that a spreadsheet would run as a formula."""
    return [cell for row in rows for cell in row
            if cell.startswith(("=", "+", "@", "\t", "\r"))
            or (cell.startswith("-") and not _is_number(cell))]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("neutraliser", ["on", "off"])  # off: the negative control
def test_csv_export_has_no_formula_cell(producer, consumer, ingest_headers, reader_headers,
                                        store: Store, monkeypatch: pytest.MonkeyPatch,
                                        neutraliser: str) -> None:
    from datetime import UTC, datetime

    from watchlog.api.consumer import export
    from watchlog.core import schema

    refused = producer.post("/v1/activities", json=seed_log(device_id=FORMULAS["device_id"]),
                            headers=ingest_headers)
    assert refused.status_code == 422  # the schema keeps them out of the API...
    producer.post("/v1/activities", json=[seed_log(user_id=f"u{i}", duration=i)
                                          for i in range(5)], headers=ingest_headers)
    minute = now_ms() // 60_000 * 60_000 - 600_000
    bad = schema.Activity(  # ...so build the log the store would, skipping validation
        user_id=FORMULAS["user_id"], activity_type="running", device_id=FORMULAS["device_id"],
        timestamp=datetime.fromtimestamp(minute / 1000, UTC), duration=60, distance=-1.5,
        location=schema.Location(latitude=-12.5, longitude=3.0),
        event_id=FORMULAS["event_id"])
    assert store.ingest([schema.to_event(bad)]) == [True]
    raw = consumer.get("/v1/activities/export?format=ndjson", headers=reader_headers)
    stored = [json.loads(line) for line in raw.data.splitlines()]
    assert {k: d[k] for d in stored for k in FORMULAS if d["event_id"] == FORMULAS["event_id"]
            } == FORMULAS  # stored as sent: the raw values start with = @ +
    if neutraliser == "off":
        monkeypatch.setattr(export, "neutralize", lambda value: value)
    r = consumer.get("/v1/activities/export?format=csv", headers=reader_headers)
    rows = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert len(rows) == 7
    if neutraliser == "on":
        assert formula_cells(rows[1:]) == []
        assert {"'" + v for v in FORMULAS.values()} <= {c for row in rows for c in row}
        assert "-1.5" in rows[[row[0] for row in rows].index("'" + FORMULAS["event_id"])]
    else:  # the same check catches every dangerous cell once nothing quotes them (and any
        # derived event id of the other logs that happens to start with '-')
        assert set(FORMULAS.values()) <= set(formula_cells(rows[1:]))


# ---- logs and headers -----------------------------------------------------------------

LAT, LON, USER = 12.345678, -98.765432, "secretuser42"


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # stricter than the services' INFO
    return caplog


class LeakyStore(Store):
    """A store whose bug raises with the payload in its message (the worst case)."""

    def ingest(self, events: Sequence[Event]) -> list[bool]:
        raise ValueError(f"cannot store {[e.body for e in events]!r}")


def test_logs_carry_no_payload_token_or_coordinates(secured, identities, cluster_settings,
                                                    all_logs) -> None:
    from watchlog.api.producer.app import create_app

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
    """The apps' own connection is the ACL user that tests/launcher/test_launcher.py restricts."""
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
                                  "watch_1 " + "a" * 64 + " u1 extra",
                                  "watch_1 " + "a" * 64 + " u1,,u2",
                                  "watch_1 " + "a" * 64 + " -u1",
                                  "-watch " + "a" * 64 + " u1"])
def test_device_tokens_file_with_a_bad_line_stops_the_start(tmp_path, line: str) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\n\nwatch_0 " + "0" * 64 + "\n" + line + "\n")
    with pytest.raises(ValueError, match=r"tokens:4: expected") as e:
        Auth(Settings(device_tokens_file=str(path)))
    assert line.split()[-1] not in str(e.value) or line == "watch_1"


def test_key_rotation_accepts_old_and_new_until_the_old_is_removed(cluster_settings,
                                                                   store) -> None:
    from watchlog.api.consumer.app import create_app

    old, new = cluster_settings.reader_key, "new-" + secrets.token_urlsafe(16)
    during = create_app(cluster_settings.replace(reader_key=f"{old}, {new}"), store)
    after = create_app(cluster_settings.replace(reader_key=new), store)
    path = "/v1/reports/daily"
    assert [during.test_client().get(path, headers=bearer(k)).status_code
            for k in (old, new)] == [200, 200]
    assert [after.test_client().get(path, headers=bearer(k)).status_code
            for k in (old, new)] == [401, 200]


# ---- deeply nested JSON: 400, never a RecursionError and a stack trace ----------------

DEEP = b"[" * 1024 + b"]" * 1024  # 2 KB
# Where a body is decoded untyped (a batch's items, the seed route, a fault spec's keys). A
# typed decoder stops at the first level of the wrong type (the extractors' bodies: 422).
DEEP_BODIES = [
    ("producer", "POST", "/v1/activities", DEEP, "application/json"),
    ("producer", "POST", "/v1/activities", b'{"x": ' + DEEP + b"}", "application/json"),
    ("producer", "POST", "/v1/activities", b'{"x": ' + DEEP + b"}\n", "application/x-ndjson"),
    ("producer", "POST", "/log_activity", DEEP, "application/json"),
    ("producer", "POST", "/log_activity", b'{"x": ' + DEEP + b"}", "application/json"),
    ("producer", "PUT", "/admin/faults", b'{"x": ' + DEEP + b"}", "application/json"),
    ("consumer", "PUT", "/admin/faults", b'{"routes": ' + DEEP + b"}", "application/json"),
]


@pytest.mark.parametrize("service, method, path, body, ctype", DEEP_BODIES)
def test_deeply_nested_json_is_400(secured, admin_headers, all_logs, store, service: str,
                                   method: str, path: str, body: bytes, ctype: str) -> None:
    r = secured[service].test_client().open(path, method=method, data=body,
                                             content_type=ctype, headers=admin_headers)
    if ctype == "application/x-ndjson":  # a batch: the line is rejected, with the same 400
        assert r.status_code == 200 and r.json["rejected"] == 1
        error = r.json["items"][0]
    else:
        assert r.status_code == 400 and r.is_json, r.data[:200]
        error = r.json
    assert "nested too deeply" in error["message"]
    assert_secure_response(r)
    assert not [rec for rec in all_logs.records if rec.levelno >= logging.ERROR]
    assert stored(store) == []


@pytest.mark.parametrize("body", [b for _, _, _, b, _ in DEEP_BODIES])
def test_deeply_nested_json_breaks_the_bare_decoder(body: bytes) -> None:
    """Negative control: each body above is one that msgspec refuses with RecursionError,
    the 500 the apps answered before they caught it."""
    import msgspec

    with pytest.raises(RecursionError):
        msgspec.json.decode(body.strip())


# ---- identifiers end at the end: "u\n" is not "u" -------------------------------------

NEWLINE_IDS = [
    ("producer", "POST", "/v1/activities", {"json": seed_log(user_id="u\n")}, "user_id"),
    ("producer", "POST", "/v1/activities", {"json": seed_log(device_id="watch_3\n")},
     "device_id"),
    ("producer", "POST", "/v1/activities", {"json": seed_log(event_id="e1\n")}, "event_id"),
    ("producer", "POST", "/log_activity", {"json": seed_log(user_id="7\n")}, "user_id"),
    ("consumer", "GET", "/v1/users/u%0A/activities", {}, "user_id"),
    ("consumer", "GET", "/v1/users/u%0A/summary", {}, "user_id"),
    ("consumer", "PUT", "/v1/extractors/x%0A", {"json": {}}, "name"),
    ("consumer", "GET", "/v1/extractors/x%0A", {}, "name"),
]


@pytest.mark.parametrize("service, method, path, kwargs, field", NEWLINE_IDS)
def test_identifiers_with_a_trailing_newline_are_422(secured, admin_headers, store,
                                                     service: str, method: str, path: str,
                                                     kwargs: dict, field: str) -> None:
    r = secured[service].test_client().open(path, method=method, headers=admin_headers,
                                            **kwargs)
    assert r.status_code == 422 and r.json["field"] == field, r.json
    assert_secure_response(r)
    assert stored(store) == []


@pytest.mark.parametrize("pattern, accepted", [
    ("schema.SAFE_ID", False),
    (r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$", True),  # negative control: the old pattern
])
def test_identifier_pattern_anchors_at_the_true_end(pattern: str, accepted: bool) -> None:
    """msgspec checks a pattern with re.search, where `$` matches before a final newline."""
    from typing import Annotated

    import msgspec

    from watchlog.core import schema

    regex = schema.SAFE_ID if pattern == "schema.SAFE_ID" else pattern
    kind = Annotated[str, msgspec.Meta(pattern=regex)]
    for text, ok in (("u", True), ("u\n", accepted), ("u\n\n", False), ("\nu", False)):
        try:
            msgspec.json.decode(msgspec.json.encode(text), type=kind)
            got = True
        except msgspec.ValidationError:
            got = False
        assert got == ok, text
