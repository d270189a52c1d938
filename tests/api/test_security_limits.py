"""Issue 13 items 5, 9 and 12 (parts): rate limits per principal, bounded extractors, strict
query parameters, the retention window on event times, and per-service secrets.

Each proof has its negative control: the same check, with the mechanism off (a setting
flipped, or the old behaviour put back), catches the failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from flask import request

from helpers import bearer, json_of, now_ms, seed_log
from watchlog.api.auth import Auth, Principal
from watchlog.cli.main import cli
from watchlog.core.credentials import Credentials
from watchlog.core.schema import iso_ms
from watchlog.core.settings import Settings
from watchlog.launcher.services import Ports, base_env
from watchlog.store import Store

# ---- item 5: rate limits key on the principal ------------------------------------------


def _header_text_principal(self: Auth) -> Principal:
    """The old keying, put back for the control: the raw ``Authorization`` text."""
    return Principal("ingest", key=request.headers.get("Authorization", ""))


@pytest.mark.parametrize("keyed_on", ["principal", "header-text-control"])
def test_rate_limit_keys_on_the_principal_not_the_header_text(
        cluster_settings, store, ingest_headers, monkeypatch, keyed_on: str) -> None:
    from watchlog.api.producer.app import create_app

    if keyed_on != "principal":
        monkeypatch.setattr(Auth, "principal", _header_text_principal)
    client = create_app(cluster_settings.replace(rate_limit="2/minute"), store).test_client()
    token = ingest_headers["Authorization"].split(" ", 1)[1]
    spellings = [f"Bearer {token}", f"Bearer  {token}", f"bearer {token}",
                 f"BEARER {token} "]
    statuses = [client.post("/v1/activities", json=seed_log(duration=i),
                            headers={"Authorization": h}).status_code
                for i, h in enumerate(spellings)]
    if keyed_on == "principal":
        assert statuses == [201, 201, 429, 429]  # one token, one budget, however spelled
    else:
        assert 429 not in statuses  # the control: each spelling was a fresh budget


COSTLY = ["/v1/users/7/summary", "/v1/reports/daily", "/v1/activities/export",
          "/v1/extractors"]


@pytest.mark.parametrize("limit", ["3/minute", "1000/minute"], ids=["limited", "control"])
def test_consumer_costly_routes_are_rate_limited_per_principal(
        cluster_settings, store, reader_headers, admin_headers, limit: str) -> None:
    from watchlog.api.consumer.app import create_app

    client = create_app(cluster_settings.replace(consumer_rate_limit=limit),
                        store).test_client()
    statuses = [client.get(path, headers=reader_headers).status_code for path in COSTLY]
    if limit == "1000/minute":
        assert statuses == [200, 200, 200, 200]
        return
    assert statuses == [200, 200, 200, 429]  # one budget over the costly routes
    r = client.get("/v1/users/7/summary", headers={
        "Authorization": "bearer  " + reader_headers["Authorization"].split(" ", 1)[1]})
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert json_of(r)["error"] == "rate_limited"
    assert "WATCHLOG_CONSUMER_RATE_LIMIT" in json_of(r)["message"]
    assert client.get("/v1/users/7/activities", headers=reader_headers).status_code == 200
    assert client.get("/v1/reports/daily", headers=admin_headers).status_code == 200


# ---- item 9 and issue 15 item 3: extractors --------------------------------------------


@pytest.fixture
def capped(cluster_settings: Settings, store: Store) -> Any:
    from watchlog.api.consumer.app import create_app

    return create_app(cluster_settings.replace(max_extractors=3), store).test_client()


def test_extractors_are_created_only_by_put_and_unknown_names_are_404(
        capped, producer, ingest_headers, reader_headers) -> None:
    h = reader_headers
    assert capped.post("/v1/extractors/ghost/batches", headers=h).status_code == 404
    assert capped.post("/v1/extractors/ghost/ack", json={"ids": []}, headers=h).status_code \
        == 404
    r = capped.delete("/v1/extractors/ghost", headers=h)
    assert r.status_code == 404 and r.json["error"] == "not_found"
    assert capped.get("/v1/extractors", headers=h).json["items"] == []  # none was made

    producer.post("/v1/activities", json=[seed_log(duration=i) for i in range(5)],
                  headers=ingest_headers)
    assert capped.put("/v1/extractors/e1", json={}, headers=h).json["lag"] == 5
    taken = capped.post("/v1/extractors/e1/batches?max=3", headers=h).json["items"]
    assert len(taken) == 3
    again = capped.put("/v1/extractors/e1", json={}, headers=h)
    assert again.status_code == 409 and again.json["error"] == "conflict"
    assert "reset=true" in again.json["message"]
    info = capped.get("/v1/extractors/e1", headers=h).json
    assert (info["lag"], info["pending"]) == (2, 3)  # the 409 changed nothing
    reset = capped.put("/v1/extractors/e1?reset=true", json={}, headers=h)
    assert reset.status_code == 200 and (reset.json["lag"], reset.json["pending"]) == (5, 0)
    bad = capped.put("/v1/extractors/e1?reset=yes", json={}, headers=h)
    assert bad.status_code == 422 and bad.json["field"] == "reset"
    assert capped.delete("/v1/extractors/e1", headers=h).status_code == 200
    assert capped.delete("/v1/extractors/e1", headers=h).status_code == 404


@pytest.mark.parametrize("cap", [3, 4], ids=["capped", "control"])
def test_extractors_are_capped_and_metrics_name_only_existing_ones(
        cluster_settings, store, reader_headers, cap: int) -> None:
    from watchlog.api.consumer.app import create_app

    client = create_app(cluster_settings.replace(max_extractors=cap), store).test_client()
    for i in range(3):
        assert client.put(f"/v1/extractors/x{i}", json={}, headers=reader_headers
                          ).status_code == 200
    fourth = client.put("/v1/extractors/x3", json={}, headers=reader_headers)
    if cap == 4:
        assert fourth.status_code == 200
        return
    assert fourth.status_code == 409
    assert "WATCHLOG_MAX_EXTRACTORS" in json_of(fourth)["message"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'extractor="x2"' in metrics and 'extractor="x3"' not in metrics
    assert client.delete("/v1/extractors/x0", headers=reader_headers).status_code == 200
    assert client.put("/v1/extractors/x3", json={}, headers=reader_headers).status_code == 200


def test_cli_extract_creates_its_extractor_then_reuses_it(cluster_settings, producer_url,
                                                          consumer_url, tmp_path) -> None:
    env = {"WATCHLOG_PRODUCER_URL": producer_url, "WATCHLOG_CONSUMER_URL": consumer_url,
           "WATCHLOG_CREDENTIALS_FILE": str(Path(cluster_settings.state_dir,
                                                 "credentials.env")),
           "WATCHLOG_INGEST_TOKEN": None, "WATCHLOG_READER_KEY": None,
           "WATCHLOG_ADMIN_KEY": None}

    def run(*args: str) -> dict[str, Any]:
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    run("simulate", "--rate", "0", "--quiet", "--json", "--count", "30", "--seed", "3")
    first = run("extract", "--name", "cli1", "-o", str(tmp_path / "a"), "--json")
    assert first["written"] == 30  # created on first use, from the earliest log
    run("simulate", "--rate", "0", "--quiet", "--json", "--count", "10", "--seed", "4")
    second = run("extract", "--name", "cli1", "-o", str(tmp_path / "a"), "--json")
    assert second["written"] == 10  # reused (the PUT's 409): only what came since


# ---- item 12: strict query parameters --------------------------------------------------

# (hostile query, the parameter named, a well-formed value of it: the control)
HOSTILE = [
    ("/v1/reports/daily?date=2026-12-01XYZ", "date", "2026-12-01"),
    ("/v1/reports/daily?date=2026-12-01T00:00:00Z", "date", "2026-12-01"),
    ("/v1/reports/daily?date=%EF%BC%92026-12-01", "date", "2026-12-01"),  # full-width 2
    ("/v1/users/7/activities?limit=%EF%BC%91", "limit", "1"),  # full-width 1
    ("/v1/users/7/activities?limit=%205", "limit", "5"),
    ("/v1/users/7/activities?limit=1_0", "limit", "10"),
    ("/v1/users/7/activities?from=2026-12-01T00:00:00ZZ", "from", "2026-12-01T00:00:00Z"),
    ("/v1/users/7/activities?to=%D9%A1%D9%A2", "to", "1764547200000"),  # Arabic-Indic
    ("/v1/users/7/summary?from=2026-12-01%0A", "from", "2026-12-01"),
    ("/v1/activities/export?format=csv%00", "format", "csv"),
    ("/v1/users/7/activities?cursor=%C3%A9", "cursor", ""),
]


@pytest.mark.parametrize("query, field, good", HOSTILE, ids=[q for q, _, _ in HOSTILE])
def test_query_parameters_are_strict_ascii(consumer, reader_headers, query: str,
                                           field: str, good: str) -> None:
    r = consumer.get(query, headers=reader_headers)
    assert r.status_code == 422, r.get_data(as_text=True)
    assert r.json["field"] == field and r.json["error"] == "invalid"
    path, _, _ = query.partition("?")  # the control: the same parameter, well formed
    ok = consumer.get(f"{path}?{field}={good}", headers=reader_headers)
    assert ok.status_code == 200, ok.get_data(as_text=True)


def test_extraction_parameters_are_strict_ascii(consumer, reader_headers) -> None:
    consumer.put("/v1/extractors/p", json={}, headers=reader_headers)
    for query, field in [("max=%EF%BC%91", "max"), ("visibility_timeout=1%C2%B2",
                                                    "visibility_timeout"),
                         ("consumer=c%C3%A9", "consumer")]:
        r = consumer.post(f"/v1/extractors/p/batches?{query}", headers=reader_headers)
        assert r.status_code == 422 and r.json["field"] == field, query
    assert consumer.post("/v1/extractors/p/batches?max=1&visibility_timeout=5&consumer=c",
                         headers=reader_headers).status_code == 200


# ---- item 12: event times within the retention window ----------------------------------

def _at(days: float) -> str:
    return iso_ms(now_ms() + int(days * 86400_000))


@pytest.mark.parametrize("retention, accepted", [(30, False), (10000, True)],
                         ids=["retention", "control"])
def test_logs_older_than_retention_are_422(cluster_settings, store, ingest_headers,
                                           retention: int, accepted: bool) -> None:
    from watchlog.api.producer.app import create_app

    client = create_app(cluster_settings.replace(retention_days=retention),
                        store).test_client()
    old = seed_log(timestamp="2010-06-01T08:00:00Z")
    for path in ("/v1/activities", "/log_activity"):
        r = client.post(path, json=old, headers=ingest_headers)
        if accepted:
            assert r.status_code in (200, 201)
            continue
        assert r.status_code == 422 and json_of(r)["field"] == "timestamp"
        assert "WATCHLOG_RETENTION_DAYS" in json_of(r)["message"]
    batch = json_of(client.post("/v1/activities", json=[seed_log(duration=1), old],
                                headers=ingest_headers))
    assert batch["items"][1]["status"] == ("duplicate" if accepted else "rejected")


def test_event_time_window_edges(producer, ingest_headers) -> None:
    post = lambda doc: producer.post("/v1/activities", json=doc,  # noqa: E731
                                     headers=ingest_headers)
    assert post(seed_log()).status_code == 201  # the seed's payload, as it is
    assert post(seed_log(timestamp=_at(-29))).status_code == 201
    late = post(seed_log(timestamp=_at(-31)))
    assert late.status_code == 422 and late.json["field"] == "timestamp"
    ahead = post(seed_log(timestamp=_at(2)))
    assert ahead.status_code == 422 and ahead.json["field"] == "timestamp"


# ---- item 12: each native process holds only the secrets it checks ---------------------

SECRETS = ("WATCHLOG_INGEST_TOKEN", "WATCHLOG_READER_KEY", "WATCHLOG_ADMIN_KEY",
           "WATCHLOG_REDIS_PASSWORD", "WATCHLOG_REDIS_ADMIN_PASSWORD",
           "WATCHLOG_REDIS_EXPORTER_PASSWORD")
NEEDED = {
    "producer": {"WATCHLOG_INGEST_TOKEN", "WATCHLOG_ADMIN_KEY", "WATCHLOG_REDIS_PASSWORD"},
    "consumer": {"WATCHLOG_READER_KEY", "WATCHLOG_ADMIN_KEY", "WATCHLOG_REDIS_PASSWORD"},
    "simulator": {"WATCHLOG_INGEST_TOKEN"},
    "extractor": {"WATCHLOG_READER_KEY"},
}


def secrets_in(env: dict[str, str], creds: Credentials) -> set[str]:
    """The secret variables of ``env`` that hold this stack's values."""
    values = {"WATCHLOG_INGEST_TOKEN": creds.ingest_token,
              "WATCHLOG_READER_KEY": creds.reader_key, "WATCHLOG_ADMIN_KEY": creds.admin_key,
              "WATCHLOG_REDIS_PASSWORD": creds.redis_app_password,
              "WATCHLOG_REDIS_ADMIN_PASSWORD": creds.redis_admin_password,
              "WATCHLOG_REDIS_EXPORTER_PASSWORD": creds.redis_exporter_password}
    held = {name for name in SECRETS if env.get(name)}
    leaked = {name for name, v in values.items() if v and v in env.values()}
    return held | leaked


def test_native_processes_hold_only_the_secrets_they_check(live_stack) -> None:
    from watchlog.core.credentials import load_or_create

    state = Path(live_stack["state_dir"])
    creds = load_or_create(state)
    pids = {e["component"]: e["pid"] for e in json.loads((state / "pids.json").read_text())
            ["services"]}
    for name, needed in NEEDED.items():
        raw = Path(f"/proc/{pids[name]}/environ").read_bytes().split(b"\0")
        env = dict(kv.decode().partition("=")[::2] for kv in raw if b"=" in kv)
        assert secrets_in(env, creds) == needed, name
    # the control: the launcher's common environment holds every key; scoping removed
    # them (the same check on it finds them all)
    common = base_env(Settings(), creds, state, "redis://x", Ports())
    assert secrets_in(common, creds) >= NEEDED["producer"] | NEEDED["consumer"]


def test_a_key_an_api_does_not_hold_is_unknown_there(live_stack) -> None:
    """On `watchlog up` the producer does not hold the reader key, nor the consumer the
    ingest token: there they are unknown credentials, 401, not 403 (docs/security.md, "Who
    may do what"). Control: the key the API holds passes the same check."""
    from watchlog.core.credentials import load_or_create

    creds = load_or_create(Path(live_stack["state_dir"]))
    doc = {"user_id": 7, "activity_type": "running", "timestamp": "2000-01-02T00:00:00Z"}
    post = httpx.post(live_stack["producer"] + "/v1/activities", json=doc,
                      headers=bearer(creds.reader_key))
    report = httpx.get(live_stack["consumer"] + "/v1/reports/daily",
                       headers=bearer(creds.ingest_token))
    assert (post.status_code, report.status_code) == (401, 401)
    assert post.json()["message"] == report.json()["message"] == "invalid credentials"
    control = httpx.get(live_stack["consumer"] + "/v1/reports/daily",
                        headers=bearer(creds.reader_key))
    assert control.status_code != 401


def test_native_env_scoping_without_a_stack(tmp_path) -> None:
    """The same rule, checked on the launcher's plan (quick, no processes)."""
    from watchlog.core.credentials import load_or_create
    from watchlog.launcher.services import app_services, client_services

    creds = load_or_create(tmp_path)
    env = base_env(Settings(), creds, tmp_path, "redis://x", Ports())
    env["WATCHLOG_REDIS_ADMIN_PASSWORD"] = creds.redis_admin_password  # inherited
    services = app_services(env, tmp_path, "127.0.0.1", Ports())
    services += client_services(env, tmp_path, "127.0.0.1", Ports())[0]
    for svc in services:
        assert secrets_in(svc.env, creds) == NEEDED[svc.name], svc.name
    # the control: the common environment the plan starts from holds them all
    assert secrets_in(env, creds) >= NEEDED["producer"] | NEEDED["consumer"]


def test_redelivery_metric_has_no_extractor_label_as_names_churn(
        cluster_settings, store, producer, ingest_headers, reader_headers) -> None:
    """Creating, redelivering and deleting names leaves the redelivery counter unlabelled."""
    import time

    from watchlog.api.consumer.app import create_app

    client = create_app(cluster_settings.replace(max_extractors=2), store).test_client()
    producer.post("/v1/activities", json=seed_log(), headers=ingest_headers)
    for name in ("churn0", "churn1", "churn2"):
        client.put(f"/v1/extractors/{name}", json={}, headers=reader_headers)
        take = f"/v1/extractors/{name}/batches?visibility_timeout=1"
        assert len(json_of(client.post(take, headers=reader_headers))["items"]) == 1
        time.sleep(1.1)  # unacknowledged past its visibility timeout: delivered again
        assert json_of(client.post(take, headers=reader_headers))["redelivered"] == 1
        client.delete(f"/v1/extractors/{name}", headers=reader_headers)
    metrics = client.get("/metrics").get_data(as_text=True)
    lines = [line for line in metrics.splitlines()
             if line.startswith("watchlog_extraction_redelivered_total")]
    assert lines and not any("churn" in line for line in lines)
