"""Issue 17's proofs: the reports page, signed in as a new user would, in Chromium.

The consumer runs as ``watchlog serve consumer`` runs it (granian, two workers) on the
session's real cluster, beside a producer that the logs are ingested through. Each number
the browser shows is compared with the JSON API's answer for the same question. The
refusals (no session, a watch's token, a forged or tampered cookie, a form without its
CSRF token) are sent over HTTP, each beside the same request that passes.

One browser (Debian's ``chromium`` driven by Playwright through ``executable_path``) is
launched for the whole module. Screenshots of every page go to ``test-artifacts/reports/``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from conftest import bearer, serve, service_env
from watchlog.launcher.credentials import Credentials
from watchlog.launcher.procs import free_redis_ports
from watchlog.launcher.redis_cluster import LocalCluster
from watchlog.schema import iso_ms
from watchlog.web.auth import digest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "reports"
DEVICE_TOKEN = "dev-reports-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:24]
DAY = datetime.now(UTC).date() - timedelta(days=3)
EMPTY_DAY = DAY - timedelta(days=20)
USER = "7"
TYPES = ("running", "walking", "cycling")
PAGE = 10  # the user's 24 logs make three pages
SHARED_CLUSTER_DATA = True  # conftest's flush leaves the data `site` ingested


def at(d: date, minutes: int) -> str:
    return iso_ms(int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
                  + minutes * 60_000)


def the_logs() -> list[dict[str, Any]]:
    """24 logs of user 7 and 6 of others on DAY, 5 the day before (the trend)."""
    logs = []
    for i in range(24):
        logs.append({"user_id": 7, "activity_type": TYPES[i % 3], "timestamp": at(DAY, 360 + 10 * i),
                     "duration": 600 + 60 * i, "distance": round(1.25 + 0.5 * i, 3),
                     "heart_rate": 90 + 3 * i, "calories_burned": 50.5 + i,
                     "location": {"latitude": 48.85, "longitude": 2.35}, "device_id": "watch_3",
                     "activity_status": "completed"})
    for j, user in enumerate(("u-alice", "u-alice", 8, 8, 9, "u-bob")):
        logs.append({"user_id": user, "activity_type": ("swimming", "yoga")[j % 2],
                     "timestamp": at(DAY, 700 + j), "duration": 1200, "distance": 0.75,
                     "heart_rate": None if j == 3 else 120, "calories_burned": 200,
                     "device_id": f"watch-{j}", "activity_status": "completed"})
    for k in range(5):
        logs.append({"user_id": 8, "activity_type": "walking",
                     "timestamp": at(DAY - timedelta(days=1), 600 + k), "duration": 300,
                     "distance": 1.0, "heart_rate": 100, "calories_burned": 30,
                     "device_id": "watch-8", "activity_status": "completed"})
    return logs


# ---- the services -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(cluster: LocalCluster, credentials: Credentials, live_services: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A consumer that knows a device token, the logs ingested through the producer
    (once for the module: SHARED_CLUSTER_DATA)."""
    rc = cluster.admin_client()
    try:
        rc.flushall(target_nodes=rc.get_primaries())
    finally:
        rc.close()
    tmp = tmp_path_factory.mktemp("reports")
    tokens = tmp / "device-tokens"
    tokens.write_text(f"watch_3 {hashlib.sha256(DEVICE_TOKEN.encode()).hexdigest()} 7\n")
    env = {**service_env(cluster, credentials), "WATCHLOG_DEVICE_TOKENS_FILE": str(tokens)}
    port = free_redis_ports("127.0.0.1", 1)[0]
    svc = serve("consumer", env, port, tmp, tmp / "metrics")
    logs = the_logs()
    r = httpx.post(f"{live_services['producer']}/v1/activities", json=logs, timeout=30,
                   headers=bearer(credentials.ingest_token))
    assert r.status_code == 200 and r.json()["created"] == len(logs), r.text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "logs": logs, "creds": credentials}
    finally:
        svc.stop()


def api(site: dict[str, Any], path: str, **params: Any) -> Any:
    r = httpx.get(site["url"] + path, params=params, timeout=30,
                  headers=bearer(site["creds"].reader_key))
    assert r.status_code == 200, r.text
    return r.json()


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextmanager
def signed_in_client(site: dict[str, Any], key: str | None = None) -> Iterator[httpx.Client]:
    """An HTTP client holding a session cookie, signed in through the form."""
    with httpx.Client(base_url=site["url"], timeout=30) as client:
        form = client.get("/reports/sign-in")
        token = CSRF.search(form.text).group(1)  # type: ignore[union-attr]
        r = client.post("/reports/sign-in", data={"csrf_token": token,
                                                  "key": key or site["creds"].reader_key})
        assert r.status_code == 302 and r.headers["location"].endswith("/reports/"), r.text
        yield client


PAGES = ("/reports/", f"/reports/users/{USER}", "/reports/export", "/reports/extractors",
         "/reports/charts/fleet/count.svg", "/reports/charts/trend.svg",
         f"/reports/charts/users/{USER}.svg", "/reports/user?user_id=7")


def test_every_reports_route_is_listed_here(site: dict[str, Any]) -> None:
    """PAGES covers every route of the blueprint but sign-in, sign-out and static files:
    a new page cannot ship without the sign-in check below."""
    from watchlog.consumer.app import create_app
    from watchlog.settings import Settings

    app = create_app(Settings(session_secret="x"), store=object())  # type: ignore[arg-type]
    rules = {r.rule for r in app.url_map.iter_rules() if r.endpoint.startswith("reports.")}
    listed = {re.sub(r"/users/7", "/users/<user_id>", p.split("?")[0]) for p in PAGES}
    listed = {p.replace("/fleet/count.svg", "/fleet/<measure>.svg") for p in listed}
    assert rules - listed == {"/reports/sign-in", "/reports/sign-out",
                              "/reports/static/<path:filename>"}


@pytest.mark.parametrize("path", PAGES)
def test_a_page_without_a_session_redirects_to_sign_in(site: dict[str, Any], path: str) -> None:
    r = httpx.get(site["url"] + path, timeout=30)
    assert r.status_code == 302
    assert r.headers["location"].startswith("/reports/sign-in?next=")
    # the control: the same request with a signed-in session is answered
    with signed_in_client(site) as client:
        assert client.get(path).status_code in (200, 302 if "user?" in path else 200)


def test_a_bearer_key_is_no_session(site: dict[str, Any]) -> None:
    """The JSON API keeps its bearer keys; the pages want the sign-in cookie."""
    headers = bearer(site["creds"].reader_key)
    assert httpx.get(site["url"] + "/reports/", headers=headers).status_code == 302
    assert httpx.get(site["url"] + "/v1/reports/daily", headers=headers).status_code == 200


@pytest.mark.parametrize("who,status", [("reader", 302), ("admin", 302), ("ingest", 403),
                                        ("device", 403), ("unknown", 401)])
def test_only_reader_and_admin_keys_sign_in(site: dict[str, Any], who: str,
                                            status: int) -> None:
    creds = site["creds"]
    key = {"reader": creds.reader_key, "admin": creds.admin_key, "ingest": creds.ingest_token,
           "device": DEVICE_TOKEN, "unknown": "not-a-key-" + DEVICE_TOKEN[-8:]}[who]
    with httpx.Client(base_url=site["url"], timeout=30) as client:
        token = CSRF.search(client.get("/reports/sign-in").text).group(1)  # type: ignore[union-attr]
        r = client.post("/reports/sign-in", data={"csrf_token": token, "key": key})
        assert r.status_code == status
        if status != 302:
            assert "Not signed in" in r.text and "text/html" in r.headers["content-type"]
        # signed in exactly when the form said so
        assert (client.get("/reports/").status_code == 200) == (status == 302)
    if who == "device":  # the control: the consumer knows this token (a watch's: 403, not 401)
        r = httpx.get(site["url"] + "/v1/reports/daily", headers=bearer(key))
        assert r.status_code == 403


def session_cookie(payload: dict[str, Any], secret: str, at_time: float | None = None) -> str:
    """A session cookie as Flask signs it, with ``secret``, dated ``at_time``."""
    app = Flask("forge")
    app.secret_key = secret
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    if at_time is None:
        return serializer.dumps(payload)  # type: ignore[no-any-return]
    with mock.patch("itsdangerous.timed.time.time", return_value=at_time):
        return serializer.dumps(payload)  # type: ignore[no-any-return]


def cookie_status(site: dict[str, Any], value: str) -> int:
    r = httpx.get(site["url"] + "/reports/extractors", cookies={"watchlog_reports": value})
    return r.status_code


def test_a_forged_tampered_or_expired_cookie_is_refused(site: dict[str, Any]) -> None:
    creds = site["creds"]
    admin = {"role": "admin", "kid": digest(creds.admin_key)[:8].hex(), "_permanent": True}
    real = creds.session_secret
    # the controls: a cookie the server signed, and one signed with its secret, pass
    with signed_in_client(site) as client:
        issued = client.cookies["watchlog_reports"]
    assert cookie_status(site, issued) == 200
    assert cookie_status(site, session_cookie(admin, real)) == 200
    # tampered: one character of the signature changed
    flipped = issued[:-1] + ("A" if issued[-1] != "A" else "B")
    assert cookie_status(site, flipped) == 302
    # tampered: the payload changed (reader -> admin), the signature kept
    body, _, rest = issued.partition(".")
    assert cookie_status(site, session_cookie(admin, real).split(".")[0] + "." + rest) == 302
    # forged: signed with another secret
    assert cookie_status(site, session_cookie(admin, "guessed-" + real[:4])) == 302
    # expired: signed with the right secret, longer ago than WATCHLOG_SESSION_LIFETIME
    assert cookie_status(site, session_cookie(admin, real, time.time() - 28800 - 60)) == 302
    assert cookie_status(site, session_cookie(admin, real, time.time() - 60)) == 200
    # a key no longer configured (rotated away): its sessions end
    gone = {**admin, "kid": digest("an-old-admin-key")[:8].hex()}
    assert cookie_status(site, session_cookie(gone, real)) == 302


def test_a_form_post_without_its_csrf_token_is_refused(site: dict[str, Any]) -> None:
    with httpx.Client(base_url=site["url"], timeout=30) as client:
        client.get("/reports/sign-in")  # the session that holds the form's token
        r = client.post("/reports/sign-in", data={"key": site["creds"].reader_key})
        assert r.status_code == 400 and "security token" in r.text
        r = client.post("/reports/sign-in", data={"key": site["creds"].reader_key,
                                                  "csrf_token": "forged-token"})
        assert r.status_code == 400
        assert client.get("/reports/").status_code == 302  # not signed in
    with signed_in_client(site) as client:  # the control: sign-in with its token passed
        form = client.get("/reports/export")
        token = CSRF.search(form.text).group(1)  # type: ignore[union-attr]
        fields = {"from": DAY.isoformat(), "to": DAY.isoformat(), "format": "csv"}
        assert client.post("/reports/export", data=fields).status_code == 400
        assert client.post("/reports/export", data={**fields, "csrf_token": token}
                           ).status_code == 200
        assert client.post("/reports/sign-out", data={}).status_code == 400
        assert client.get("/reports/").status_code == 200  # still signed in
        assert client.post("/reports/sign-out", data={"csrf_token": token}).status_code == 302
        assert client.get("/reports/").status_code == 302


def test_the_cookie_is_httponly_samesite_strict_and_bounded(site: dict[str, Any]) -> None:
    with httpx.Client(base_url=site["url"], timeout=30) as client:
        token = CSRF.search(client.get("/reports/sign-in").text).group(1)  # type: ignore[union-attr]
        r = client.post("/reports/sign-in", data={"csrf_token": token,
                                                  "key": site["creds"].reader_key})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("watchlog_reports=")
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")[1:]}
    assert "httponly" in attrs and attrs["samesite"].lower() == "samesite=strict"
    assert attrs["path"] == "Path=/reports" and "expires" in attrs
    assert "secure" not in attrs  # plain http here; a request over https gets Secure:
    from watchlog.consumer.app import create_app
    from watchlog.settings import Settings

    app = create_app(Settings(session_secret="s" * 32), store=object())  # type: ignore[arg-type]
    over_https = app.test_client().get("/reports/sign-in", base_url="https://localhost")
    assert "; Secure" in over_https.headers["Set-Cookie"]
    plain = app.test_client().get("/reports/sign-in")  # the control
    assert "; Secure" not in plain.headers["Set-Cookie"]


def test_no_session_secret_refuses_the_reports(site: dict[str, Any]) -> None:
    from watchlog.consumer.app import create_app
    from watchlog.settings import Settings

    off = create_app(Settings(session_secret=""), store=object()).test_client()  # type: ignore[arg-type]
    r = off.get("/reports/sign-in")
    assert r.status_code == 503 and "WATCHLOG_SESSION_SECRET" in r.text
    assert off.get("/reports/").status_code == 503
    on = create_app(Settings(session_secret="s" * 32), store=object()).test_client()  # type: ignore[arg-type]
    assert on.get("/reports/sign-in").status_code == 200  # the control
