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

from helpers import ROOT, bearer, require_tool, serve, service_env
from watchlog.api.auth import digest
from watchlog.core.credentials import Credentials, load_or_create, read_env_file
from watchlog.core.schema import iso_ms
from watchlog.launcher.procs import free_redis_ports
from watchlog.launcher.redis.cluster import LocalCluster

ARTIFACTS = ROOT / "test-artifacts" / "reports"
DEVICE_TOKEN = "dev-reports-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:24]
DAY = datetime.now(UTC).date() - timedelta(days=3)
EMPTY_DAY = DAY - timedelta(days=20)
USER = "7"
TYPES = ("running", "walking", "cycling")
PAGE = 10  # the user's 24 logs make three pages
# conftest's flush leaves the data `site` ingested for the whole module
pytestmark = pytest.mark.shared_data


def at(d: date, minutes: int) -> str:
    return iso_ms(int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
                  + minutes * 60_000)


def the_logs() -> list[dict[str, Any]]:
    """24 logs of user 7 and 6 of others on DAY, 5 the day before (the trend)."""
    logs = []
    for i in range(24):
        logs.append({"user_id": 7, "activity_type": TYPES[i % 3],
                     "timestamp": at(DAY, 360 + 10 * i), "duration": 600 + 60 * i,
                     "distance": round(1.25 + 0.5 * i, 3),
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
    (once for the module: the module is marked shared_data)."""
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
    from watchlog.api.consumer.app import create_app
    from watchlog.core.settings import Settings

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
    admin = {"role": "admin", "kid": digest(creds.admin_key)[:8].hex(), "_permanent": True,
             "at": int(time.time())}
    real = creds.session_secret
    # the controls: a cookie the server signed, and one signed with its secret, pass
    with signed_in_client(site) as client:
        issued = client.cookies["watchlog_reports"]
    assert cookie_status(site, issued) == 200
    assert cookie_status(site, session_cookie(admin, real)) == 200
    # tampered: one character of the signature changed, its first: every bit of it is the
    # signature's (the last base64 character also carries padding bits, and A -> B there
    # changed none of the signature's bytes: the test failed once in 16 runs)
    head, _, signature = issued.rpartition(".")
    flipped = f"{head}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    assert cookie_status(site, flipped) == 302
    # tampered: the payload changed (reader -> admin), the signature kept
    body, _, rest = issued.partition(".")
    assert cookie_status(site, session_cookie(admin, real).split(".")[0] + "." + rest) == 302
    # forged: signed with another secret
    assert cookie_status(site, session_cookie(admin, "guessed-" + real[:4])) == 302
    # expired: signed with the right secret, longer ago than WATCHLOG_SESSION_LIFETIME
    expired = {**admin, "at": int(time.time()) - 28800 - 60}
    assert cookie_status(site, session_cookie(expired, real, time.time() - 28800 - 60)) == 302
    # a cookie without its sign-in time (not issued by this sign-in form) is refused
    assert cookie_status(site, session_cookie(
        {k: v for k, v in admin.items() if k != "at"}, real)) == 302
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
    from watchlog.api.consumer.app import create_app
    from watchlog.core.settings import Settings

    app = create_app(Settings(session_secret="s" * 32), store=object())  # type: ignore[arg-type]
    over_https = app.test_client().get("/reports/sign-in", base_url="https://localhost")
    assert "; Secure" in over_https.headers["Set-Cookie"]
    plain = app.test_client().get("/reports/sign-in")  # the control
    assert "; Secure" not in plain.headers["Set-Cookie"]


def test_no_session_secret_refuses_the_reports(site: dict[str, Any]) -> None:
    from watchlog.api.consumer.app import create_app
    from watchlog.core.settings import Settings

    off = create_app(Settings(session_secret=""), store=object()).test_client()  # type: ignore[arg-type]
    r = off.get("/reports/sign-in")
    assert r.status_code == 503 and "WATCHLOG_SESSION_SECRET" in r.text
    assert off.get("/reports/").status_code == 503
    on = create_app(Settings(session_secret="s" * 32), store=object()).test_client()  # type: ignore[arg-type]
    assert on.get("/reports/sign-in").status_code == 200  # the control


# ---- in the browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, driven by Playwright (never a browser it downloads itself)."""
    exe = require_tool("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe)
        try:
            yield b
        finally:
            b.close()


class Tab:
    """One browser context and page, with the checks every page gets."""

    def __init__(self, browser: Any, site: dict[str, Any], **context: Any) -> None:
        self.site = site
        self.context = browser.new_context(accept_downloads=True, **context)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(m.text))

    def go(self, path: str, status: int = 200) -> Any:
        r = self.page.goto(self.site["url"] + path)
        assert r is not None and r.status == status, (path, r and r.status)
        return r

    def sign_in(self, key: str | None = None) -> None:
        self.go("/reports/sign-in")
        self.page.fill("#key", key or self.site["creds"].reader_key)
        self.page.click("button:has-text('Sign in')")
        self.page.wait_for_url("**/reports/")

    def checked(self, name: str) -> None:
        """axe-core finds no serious or critical violation; a screenshot is kept; the CSP
        refused nothing the page itself asked for; every image (chart) loaded."""
        assert_accessible(self.page)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        assert not [m for m in self.console if "Content Security Policy" in m], self.console
        assert self.page.evaluate(
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")

    def close(self) -> None:
        self.context.close()


def assert_accessible(page: Any) -> None:
    assert [f"{v['id']} ({v['impact']}): {v['help']}" for v in axe_violations(page)] == []


def axe_violations(page: Any) -> list[dict[str, Any]]:
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    return [v for v in found if v["impact"] in ("serious", "critical")]


def figure(text: str) -> float | None:
    text = text.strip()
    return None if text == "–" else float(text.replace(",", ""))


def shown_figures(scope: Any) -> dict[str, float | None]:
    cells = scope.locator("[data-figure]")
    return {cells.nth(i).get_attribute("data-figure"): figure(cells.nth(i).inner_text())
            for i in range(cells.count())}


def api_figures(doc: dict[str, Any], keys: Any) -> dict[str, Any]:
    return {k: doc[k] for k in keys}


@pytest.fixture
def tab(browser: Any, site: dict[str, Any]) -> Iterator[Tab]:
    t = Tab(browser, site, viewport={"width": 1280, "height": 900})
    try:
        yield t
    finally:
        t.close()


@pytest.mark.slow
def test_a_new_user_signs_in_reads_the_day_follows_a_user_exports_and_signs_out(
        tab: Tab, site: dict[str, Any]) -> None:
    page, day = tab.page, DAY.isoformat()
    # no session: every page sends the browser to the sign-in form
    tab.go("/reports/")
    assert "/reports/sign-in" in page.url
    tab.checked("sign-in")
    tab.sign_in()

    # the fleet day: every figure equals /v1/reports/daily's
    r = tab.go(f"/reports/?date={day}")
    assert r.headers["content-security-policy"] == (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
    daily = api(site, "/v1/reports/daily", date=day)
    totals = shown_figures(page.locator("#totals"))
    assert totals == {"active_users": daily["active_users"],
                      **api_figures(daily["total"], set(totals) - {"active_users"})}
    assert totals["count"] == 30 and totals["active_users"] == 5  # what was ingested
    rows = page.locator("#by-type tbody tr")
    by_type = {rows.nth(i).get_attribute("data-type"): shown_figures(rows.nth(i))
               for i in range(rows.count())}
    assert by_type == {t: api_figures(f, by_type[t]) for t, f in daily["by_type"].items()}
    trend = page.locator("#trend tbody tr")
    assert trend.count() == 14
    for i in range(trend.count()):
        d = trend.nth(i).get_attribute("data-date")
        doc = api(site, "/v1/reports/daily", date=d)
        assert shown_figures(trend.nth(i)) == {"count": doc["count"],
                                              "active_users": doc["active_users"]}, d
    assert page.locator("main img").count() == 5  # 4 by type, the trend
    tab.checked("fleet-day")

    # the previous day by its link, then back with the date picker
    page.click("a[rel=prev]")
    assert page.url.endswith(f"date={(DAY - timedelta(days=1)).isoformat()}")
    assert shown_figures(page.locator("#totals"))["count"] == 5
    page.fill("#date", day)
    page.click("button:has-text('Show day')")
    assert shown_figures(page.locator("#totals"))["count"] == 30

    # follow to a user with the form; their summary equals /v1/users/7/summary
    page.fill("#user_id", USER)
    page.click("button:has-text('Open user')")
    page.wait_for_url(f"**/reports/users/{USER}")
    tab.go(f"/reports/users/{USER}?from={day}&to={day}&limit={PAGE}")
    summary = api(site, f"/v1/users/{USER}/summary", **{"from": day, "to": day})
    shown = shown_figures(page.locator("#totals"))
    assert shown == api_figures(summary["total"], shown) and shown["count"] == 24
    assert shown_figures(page.locator("#days tbody tr")) == api_figures(
        summary["days"][0]["total"], shown)
    tab.checked("user")

    # page through the user's logs: every log once, in the API's order
    end = f"{day}T23:59:59.999Z"
    expected = [d["event_id"] for d in api(site, f"/v1/users/{USER}/activities", limit=1000,
                                           **{"from": day, "to": end})["items"]]
    seen: list[str] = []
    for _ in range(10):
        ids = page.locator("#logs tbody tr")
        seen += [ids.nth(i).get_attribute("data-event-id") for i in range(ids.count())]
        if page.locator("a:has-text('Next page')").count() == 0:
            break
        page.click("a:has-text('Next page')")
    assert seen == expected and len(set(seen)) == len(seen) == 24

    # filter by activity type
    page.select_option("#activity_type", "running")
    page.click("button:has-text('Show')")
    types = page.locator("#logs tbody tr td:nth-child(2)").all_inner_texts()
    running = api(site, f"/v1/users/{USER}/activities", activity_type="running",
                  **{"from": day, "to": end})["items"]
    assert types == ["running"] * len(running) == ["running"] * 8

    # export: the downloaded CSV equals the export endpoint's
    tab.go("/reports/export")
    page.fill("#from", day)
    page.fill("#to", day)
    page.select_option("#format", "csv")
    tab.checked("export")
    with page.expect_download() as download:
        page.click("button:has-text('Download')")
    got = Path(download.value.path()).read_text()
    want = httpx.get(site["url"] + "/v1/activities/export", timeout=30,
                     params={"from": day, "to": end, "format": "csv"},
                     headers=bearer(site["creds"].reader_key)).text
    assert got == want and len(got.splitlines()) == 31  # a header and 30 logs

    # extractors: lag and pending as /v1/extractors says
    reader = bearer(site["creds"].reader_key)
    httpx.put(site["url"] + "/v1/extractors/reports-page", json={"start": "earliest"},
              headers=reader).raise_for_status()
    httpx.post(site["url"] + "/v1/extractors/reports-page/batches?max=3",
               headers=reader).raise_for_status()
    try:
        tab.go("/reports/extractors")
        item = next(x for x in api(site, "/v1/extractors")["items"]
                    if x["name"] == "reports-page")
        assert shown_figures(page.locator("tr[data-name=reports-page]")) == {
            "lag": item["lag"], "pending": item["pending"]} == {"lag": 32, "pending": 3}
        tab.checked("extractors")
    finally:
        httpx.delete(site["url"] + "/v1/extractors/reports-page", headers=reader)

    # sign out: every page is refused after it
    page.click("button:has-text('Sign out')")
    page.wait_for_url("**/reports/sign-in?out=1")
    assert "You are signed out" in page.inner_text("main")
    for path in PAGES:
        tab.go(path)
        assert "/reports/sign-in" in page.url, path


@pytest.mark.slow
def test_bad_input_and_empty_pages_say_so_readably(tab: Tab) -> None:
    page, day = tab.page, DAY.isoformat()
    tab.sign_in()
    # invalid input: 422 naming the parameter, as the API answers the same query
    wide = f"from={(DAY - timedelta(days=40)).isoformat()}&to={day}"
    for page_path, api_path in ((f"/reports/users/{USER}?{wide}",
                                 f"/v1/users/{USER}/summary?{wide}"),
                                ("/reports/?date=2026-13-45", "/v1/reports/daily?date=2026-13-45")):
        r = httpx.get(tab.site["url"] + api_path, headers=bearer(tab.site["creds"].reader_key))
        assert r.status_code == 422
        tab.go(page_path, 422)
        assert r.json()["message"] in page.inner_text("main")
    cases = [
        ("/reports/?date=2026-13-45", 422, "date: '2026-13-45' is not a date"),
        (f"/reports/users/{USER}?{wide}", 422, "WATCHLOG_MAX_RANGE_DAYS"),
        ("/reports/users/nobody", 200, "No logs of user nobody"),
        ("/reports/user?user_id=a%20b", 422, "user_id"),
        ("/reports/?tz=Mars/Olympus", 422, "not an IANA time zone"),
        (f"/reports/?date={EMPTY_DAY.isoformat()}", 200, "No logs on"),
    ]
    for path, status, message in cases:
        tab.go(path, status)
        assert message in page.inner_text("main"), path
        assert page.locator("main img").count() == 0  # no empty chart
    tab.checked("empty-day")
    tab.go("/reports/?date=2026-13-45", 422)
    tab.checked("error")
    # the controls: a range of exactly WATCHLOG_MAX_RANGE_DAYS, a known user, a real zone
    tab.go(f"/reports/users/{USER}?from={(DAY - timedelta(days=30)).isoformat()}&to={day}")
    tab.go(f"/reports/?tz=Europe/Paris&date={day}")
    assert page.locator("main img").count() == 5


@pytest.mark.slow
def test_tz_shifts_the_times_shown_and_nothing_counted(tab: Tab, site: dict[str, Any]) -> None:
    page, day = tab.page, DAY.isoformat()
    tab.sign_in()
    first = api(site, f"/v1/users/{USER}/activities", limit=1,
                **{"from": day, "to": f"{day}T23:59:59.999Z"})["items"][0]["timestamp"]
    utc = datetime.fromisoformat(first.replace("Z", "+00:00"))
    path = f"/reports/users/{USER}?from={day}&to={day}"
    tab.go(path)
    assert "Times are in UTC" in page.inner_text("#timezone")
    assert page.locator("#logs time").first.inner_text() == utc.strftime("%Y-%m-%d %H:%M:%S +0000")
    counted = shown_figures(page.locator("#totals"))
    tab.go(path + "&tz=Asia/Kolkata")
    assert "Asia/Kolkata" in page.inner_text("#timezone")
    shifted = utc + timedelta(hours=5, minutes=30)
    assert page.locator("#logs time").first.inner_text() == shifted.strftime(
        "%Y-%m-%d %H:%M:%S +0530")
    assert shown_figures(page.locator("#totals")) == counted
    # links keep the zone
    assert "tz=Asia/Kolkata" in (page.get_attribute("a:has-text('Fleet day')", "href") or "")
    tab.checked("user-tz")


@pytest.mark.slow
def test_keyboard_phone_width_and_200_percent_zoom(browser: Any, site: dict[str, Any]) -> None:
    day = DAY.isoformat()
    sizes: dict[str, dict[str, Any]] = {"phone": {"viewport": {"width": 375, "height": 800}},
             "zoom-200": {"viewport": {"width": 640, "height": 450}, "device_scale_factor": 2}}
    for name, options in sizes.items():
        t = Tab(browser, site, **options)
        try:
            t.sign_in()
            for path, shot in ((f"/reports/?date={day}", "fleet"),
                               (f"/reports/users/{USER}?from={day}&to={day}", "user")):
                t.go(path)
                # no sideways scrolling of the page: wide tables scroll in their own region
                assert t.page.evaluate(
                    "document.documentElement.scrollWidth <= window.innerWidth"), (name, path)
                t.checked(f"{shot}-{name}")
            # the control: a wider element does make the page scroll sideways
            t.page.evaluate("const d = document.createElement('div'); d.textContent = 'wide';"
                            "d.style.width = '2000px'; document.body.append(d)")
            assert not t.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        finally:
            t.close()
    # by keyboard only: skip link first, then to the user form, Enter opens the user
    t = Tab(browser, site, viewport={"width": 1280, "height": 900})
    try:
        t.sign_in()
        t.go(f"/reports/?date={day}")
        t.page.keyboard.press("Tab")
        assert t.page.evaluate("document.activeElement.textContent") == "Skip to the content"
        for _ in range(30):
            t.page.keyboard.press("Tab")
            if t.page.evaluate("document.activeElement.id") == "user_id":
                break
        assert t.page.evaluate("document.activeElement.id") == "user_id"
        t.page.keyboard.type(USER)
        t.page.keyboard.press("Enter")
        t.page.wait_for_url(f"**/reports/users/{USER}")
    finally:
        t.close()


@pytest.mark.slow
def test_the_checks_catch_what_they_look_for(tab: Tab) -> None:
    """Negative controls of the checks every page gets: axe finds an image without text,
    and the CSP refuses (and reports) a style the page did not ship as a file."""
    tab.sign_in()
    tab.go(f"/reports/?date={DAY.isoformat()}")
    tab.page.evaluate("document.querySelector('main img').removeAttribute('alt')")
    assert "image-alt" in {v["id"] for v in axe_violations(tab.page)}
    tab.page.evaluate("document.head.insertAdjacentHTML('beforeend', "
                      "'<style>body{background:red}</style>')")
    assert tab.page.evaluate("getComputedStyle(document.body).backgroundColor") != \
        "rgb(255, 0, 0)"
    tab.page.wait_for_timeout(200)  # the console message is delivered asynchronously
    assert [m for m in tab.console if "Content Security Policy" in m]


def test_reports_routes_are_in_the_red_metrics(site: dict[str, Any]) -> None:
    def served(route: str) -> float:
        text = httpx.get(site["url"] + "/metrics", timeout=30).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("watchlog_http_requests_total{")
                   and f'route="{route}"' in line)

    before = {r: served(r) for r in ("/reports/", "/reports/users/<user_id>")}
    with signed_in_client(site) as client:
        assert client.get("/reports/").status_code == 200
        assert client.get(f"/reports/users/{USER}").status_code == 200
        assert client.get("/reports/users/nobody").status_code == 200
    assert served("/reports/") == before["/reports/"] + 1
    assert served("/reports/users/<user_id>") == before["/reports/users/<user_id>"] + 2


def test_an_older_credentials_file_gains_a_session_secret(tmp_path: Path) -> None:
    """`watchlog up` on a state folder from before the reports page keeps its keys and adds
    the session secret; a file missing an older key is still refused (the control)."""
    path = tmp_path / "credentials.env"
    first = load_or_create(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(x for x in lines if "SESSION_SECRET" not in x) + "\n")
    again = load_or_create(tmp_path)
    assert again.reader_key == first.reader_key and again.session_secret
    assert read_env_file(path)["WATCHLOG_SESSION_SECRET"] == again.session_secret
    assert load_or_create(tmp_path) == again  # written once, then read
    path.write_text("\n".join(x for x in lines if "READER_KEY" not in x) + "\n")
    with pytest.raises(ValueError, match="WATCHLOG_READER_KEY"):
        load_or_create(tmp_path)


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_the_export_form_downloads_what_the_export_endpoint_answers(site: dict[str, Any],
                                                                    fmt: str) -> None:
    day, week_before = DAY.isoformat(), (DAY - timedelta(days=7)).isoformat()
    want = httpx.get(site["url"] + "/v1/activities/export", timeout=30,
                     params={"from": week_before, "to": f"{day}T23:59:59.999Z", "format": fmt},
                     headers=bearer(site["creds"].reader_key))
    assert want.status_code == 200
    with signed_in_client(site) as client:
        token = CSRF.search(client.get("/reports/export").text).group(1)  # type: ignore[union-attr]
        fields = {"csrf_token": token, "format": fmt, "to": day}
        got = client.post("/reports/export", data={**fields, "from": week_before})
        assert got.status_code == 200 and got.text == want.text
        assert got.headers["content-disposition"].startswith("attachment; filename=")
        assert len(got.text.splitlines()) == 35 + (fmt == "csv")  # every log (and a header)
        # the API's range limit: 31 days pass (the control), 32 are refused as the API does
        widest = (DAY - timedelta(days=30)).isoformat()
        assert client.post("/reports/export", data={**fields, "from": widest}).status_code == 200
        over = (DAY - timedelta(days=31)).isoformat()
        refused = client.post("/reports/export", data={**fields, "from": over})
        assert refused.status_code == 422 and "WATCHLOG_MAX_RANGE_DAYS" in refused.text


def test_no_served_chart_holds_a_script(site: dict[str, Any]) -> None:
    """pygal writes its configuration as an inline <script>; every chart served has none."""
    day = DAY.isoformat()
    charts_served = [f"/reports/charts/fleet/{m}.svg?date={day}"
                     for m in ("count", "duration", "distance", "calories")]
    charts_served += [f"/reports/charts/trend.svg?date={day}",
                      f"/reports/charts/users/{USER}.svg?from={day}&to={day}"]
    with signed_in_client(site) as client:
        for path in charts_served:
            r = client.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
            assert "<svg" in r.text and "<script" not in r.text.lower(), path
    # the control: what pygal renders with the same options does hold one
    from watchlog.api.consumer.reports import charts  # imports pygal, then unhooks it

    raw = charts.pygal.Bar(**charts._COMMON).render()  # type: ignore[attr-defined]  # pygal as charts imported it (its import hook removed)
    assert "<script" in raw and "<script" not in charts.static_svg(raw)


def test_a_user_with_no_logs_in_the_range_is_an_answer_not_a_404(site: dict[str, Any]) -> None:
    """A known user with nothing in the range, and an unknown user, get 200 and a sentence,
    as the JSON API answers 200 with zeros."""
    empty = EMPTY_DAY.isoformat()
    with signed_in_client(site) as client:
        for user in (USER, "nobody"):
            r = client.get(f"/reports/users/{user}", params={"from": empty, "to": empty})
            assert r.status_code == 200 and f"No logs of user {user} from {empty}" in r.text
            doc = api(site, f"/v1/users/{user}/summary", **{"from": empty, "to": empty})
            assert doc["total"]["count"] == 0
        # the control: the user's day with logs shows them, not the sentence
        day = DAY.isoformat()
        r = client.get(f"/reports/users/{USER}", params={"from": day, "to": day})
        assert r.status_code == 200 and "No logs of user" not in r.text
