"""The reports page's sign-in, forms, redirects and cookie, in process (Flask's test client):
bad form bodies get a readable 4xx, ``next`` stays under /reports/, redirects name no
host, the lifetime runs from the sign-in, and ``Secure`` follows a trusted TLS proxy.

No store is needed: sign-in, the forms' refusals and error pages read nothing from Redis.
"""

from __future__ import annotations

import io
import re
import time
from typing import Any

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from watchlog.api.consumer.app import create_app
from watchlog.core.settings import Settings

SECRET = "s" * 32
READER = "reader-key-for-forms"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def app_of(**settings: Any) -> Flask:
    s = Settings(session_secret=SECRET, reader_key=READER, **settings)
    return create_app(s, store=object())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def app() -> Flask:
    return app_of()


def token(client: Any, path: str = "/reports/sign-in") -> str:
    return CSRF.search(client.get(path).get_data(as_text=True)).group(1)  # type: ignore[union-attr]


def signed_in(client: Any) -> None:
    r = client.post("/reports/sign-in", data={"csrf_token": token(client), "key": READER})
    assert r.status_code == 302 and r.headers["Location"] == "/reports/"


def page_status(client: Any) -> int:
    """A page that needs a session and no store: an invalid date answers 422 when signed in."""
    return client.get("/reports/?date=bad").status_code  # type: ignore[no-any-return]


@pytest.mark.parametrize("nxt", ["/reports/extractors%0A", "/reports/extractors%0D%0Ax",
                                 "/reports/%0d%0aSet-Cookie:%20a=b"])
def test_a_line_break_in_next_falls_back_to_the_fleet_day(app: Flask, nxt: str) -> None:
    client = app.test_client()
    path = f"/reports/sign-in?next={nxt}"
    r = client.post(path, data={"csrf_token": token(client, path), "key": READER})
    assert r.status_code == 302 and r.headers["Location"] == "/reports/"
    # the control: a plain path under /reports/ is followed
    ok = "/reports/sign-in?next=/reports/extractors"
    client = app.test_client()
    r = client.post(ok, data={"csrf_token": token(client, ok), "key": READER})
    assert r.status_code == 302 and r.headers["Location"] == "/reports/extractors"


@pytest.mark.parametrize("nxt,went", [
    ("/reports/../admin/faults", "/reports/"), ("/reports/%2e%2e/admin/faults", "/reports/"),
    ("/reports/./x", "/reports/"), ("/reports/%5C%5Cevil.example", "/reports/"),
    ("//evil.example/reports/", "/reports/"), ("https://evil.example/reports/", "/reports/"),
    ("/reports/\\evil", "/reports/"), ("/admin/faults", "/reports/"),
    ("/reports/users/7?from=2026-01-01", "/reports/users/7?from=2026-01-01"),  # the control
])
def test_next_stays_under_reports(app: Flask, nxt: str, went: str) -> None:
    client = app.test_client()
    signed_in(client)
    r = client.get("/reports/sign-in", query_string={"next": nxt})
    assert r.status_code == 302 and r.headers["Location"] == went


@pytest.mark.parametrize("body,kind", [
    ('{"key": 123}', "application/json"), ('{"key": {"a": 1}}', "application/json"),
    ('{"key": true}', "application/json"), ('{"csrf_token": 123}', "application/json"),
    ("[1, 2]", "application/json"), ("key=x", "text/plain")])
@pytest.mark.parametrize("path", ["/reports/sign-in", "/reports/sign-out", "/reports/export"])
def test_a_form_posted_as_anything_but_a_form_is_415(app: Flask, path: str, body: str,
                                                     kind: str) -> None:
    client = app.test_client()
    signed_in(client)
    r = client.post(path, data=body, content_type=kind)
    assert r.status_code == 415 and "text/html" in r.content_type
    assert "application/x-www-form-urlencoded" in r.get_data(as_text=True)
    assert page_status(client) == 422  # still signed in: nothing was done


def test_a_file_in_a_multipart_form_is_400(app: Flask) -> None:
    client = app.test_client()
    t = token(client)
    r = client.post("/reports/sign-in", content_type="multipart/form-data",
                    data={"csrf_token": t, "key": (io.BytesIO(READER.encode()), "key.txt")})
    assert r.status_code == 400 and "not as a file" in r.get_data(as_text=True)
    assert page_status(client) == 302  # not signed in
    # the control: the same multipart form with the key as a text field signs in
    r = client.post("/reports/sign-in", content_type="multipart/form-data",
                    data={"csrf_token": t, "key": READER})
    assert r.status_code == 302 and page_status(client) == 422


def test_a_json_export_post_does_not_export_today(app: Flask) -> None:
    client = app.test_client()
    signed_in(client)
    r = client.post("/reports/export", json={"csrf_token": token(client, "/reports/export")})
    assert r.status_code == 415 and "attachment" not in r.headers.get("Content-Disposition", "")


def test_reports_without_slash_redirects_to_a_path_not_the_host(app: Flask) -> None:
    r = app.test_client().get("/reports", headers={"Host": "evil.example"})
    assert r.status_code == 308 and r.headers["Location"] == "/reports/"
    # the control: werkzeug alone answers with the request's host
    bare = Flask("bare")
    bare.add_url_rule("/reports/", "x", lambda: "")
    r = bare.test_client().get("/reports", headers={"Host": "evil.example"})
    assert r.headers["Location"] == "http://evil.example/reports/"


def serializer() -> URLSafeTimedSerializer:
    """How Flask signs the session cookie, with the app's secret."""
    signer = Flask("forge")
    signer.secret_key = SECRET
    s = SecureCookieSessionInterface().get_signing_serializer(signer)
    assert s is not None
    return s


def reissued(cookie: str, **changes: Any) -> str:
    """The session cookie signed again now (as Flask does whenever the session changes)."""
    return serializer().dumps({**serializer().loads(cookie), **changes})  # type: ignore[no-any-return]  # itsdangerous dumps returns str here


def test_the_lifetime_runs_from_the_sign_in_whatever_the_reissues() -> None:
    app = app_of(session_lifetime=2)
    client = app.test_client()
    signed_in(client)
    assert page_status(client) == 422  # a page viewed: the session is live
    time.sleep(2.2)  # the lifetime has passed since the sign-in
    assert page_status(client) == 302
    # a cookie signed a moment ago whose sign-in is older than the lifetime is refused;
    # the control: Flask's own check of the signed timestamp alone would take it
    client = app.test_client()
    signed_in(client)
    cookie = client.get_cookie("watchlog_reports", path="/reports")
    assert cookie is not None
    old = reissued(cookie.value, at=int(time.time()) - 10)
    serializer().loads(old, max_age=2)  # Flask's own check: the signed timestamp is fresh
    client.set_cookie("watchlog_reports", old, path="/reports")
    assert page_status(client) == 302
    client.set_cookie("watchlog_reports", reissued(cookie.value), path="/reports")
    assert page_status(client) == 422  # the same cookie with its real sign-in time passes


def test_sign_in_issues_the_forms_token_so_the_first_page_keeps_the_cookie(app: Flask) -> None:
    client = app.test_client()
    signed_in(client)
    assert "Set-Cookie" not in client.get("/reports/?date=bad").headers


@pytest.mark.parametrize("hops,secure", [(1, True), (0, False)])
def test_secure_cookie_behind_a_trusted_tls_proxy(hops: int, secure: bool) -> None:
    """WATCHLOG_PROXY_HOPS=1 trusts the proxy's X-Forwarded-Proto; 0 (the default, the
    control) ignores it, so a client cannot claim https."""
    r = app_of(proxy_hops=hops).test_client().get(
        "/reports/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert ("; Secure" in r.headers["Set-Cookie"]) is secure


def test_the_stylesheet_is_revalidated_and_pages_are_not_stored(app: Flask) -> None:
    """As docs/security.md says: every response no-store, but the stylesheet no-cache."""
    client = app.test_client()
    assert client.get("/reports/static/reports.css").headers["Cache-Control"] == "no-cache"
    assert client.get("/reports/sign-in").headers["Cache-Control"] == "no-store"
