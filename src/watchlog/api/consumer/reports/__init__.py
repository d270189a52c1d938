"""The reports page: what internal users open every morning, served by the consumer.

Server-rendered HTML (Jinja templates in ``templates/``, one CSS file in ``static/``, no
script) and SVG charts drawn by pygal. Every number comes from the functions the JSON API
answers with (``queries.daily_report_body``, ``user_summary_body``, ``user_activities_body``,
``export_body``, ``extractor_items``): a page and ``/v1/...`` cannot drift apart.

Sign-in takes a reader or admin key through a form and keeps a signed session cookie
(``session.py``); every form that posts carries a CSRF token (Flask-WTF). Times are UTC
unless ``?tz=`` names an IANA zone, which changes how times are shown, never what is
counted: days stay UTC days, as in the API.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import wraps
from typing import Any, ParamSpec, cast
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from wtforms import PasswordField
from wtforms.validators import DataRequired

from watchlog.api import params
from watchlog.api.consumer.export import EXPORT_FORMATS
from watchlog.api.consumer.extraction import extractor_items
from watchlog.api.consumer.queries import (
    daily_report_body,
    export_body,
    user_activities_body,
    user_summary_body,
)
from watchlog.api.consumer.reports import charts
from watchlog.api.consumer.reports import session as auth
from watchlog.core import schema
from watchlog.core.errors import InvalidInput, NotFound, WatchlogError
from watchlog.core.keys import DAY_MS
from watchlog.core.settings import Settings

# Only the page's own resources: its CSS and its chart images; no script at all.
PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")
# A chart is an image: its own inline styles apply inside it, and nothing runs.
CHART_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
MEASURES = {  # chart name -> (figure of the API's totals, unit)
    "count": ("count", "logs"), "duration": ("duration", "seconds"),
    "distance": ("distance", "km"), "calories": ("calories_burned", "kcal")}
TREND_DAYS = 14
PAGE_SIZE = 50
_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}", re.ASCII)
# What a form may be posted as: the browser's encodings of a form, never JSON.
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
FORM_ENDPOINTS = ("reports.signin", "reports.signout", "reports.export")


class SignInForm(FlaskForm):  # type: ignore[misc]  # flask_wtf ships no types
    key = PasswordField("Reader or admin key", validators=[DataRequired()])


class TokenForm(FlaskForm):  # type: ignore[misc]  # flask_wtf ships no types
    """A form with only its CSRF token (sign-out, export: their fields are parsed strictly
    by watchlog.web.params, as the API parses them)."""


def reports_blueprint(settings: Settings) -> Blueprint:
    bp = Blueprint("reports", __name__, url_prefix="/reports", template_folder="templates",
                   static_folder="static", static_url_path="/static")

    @bp.record_once
    def setup(state: BlueprintSetupState) -> None:
        app = cast(Flask, state.app)  # registered on the consumer, a Flask app
        auth.configure(app, settings)
        app.jinja_env.globals["reports_link"] = link

    @bp.before_request
    def refuse_without_secret() -> Response | None:
        if not settings.session_secret and request.endpoint != "reports.static":
            return page("error.html", 503, title="Reports are off",
                        message="The reports page needs WATCHLOG_SESSION_SECRET (it signs "
                                "the sign-in cookie); it has no default. `watchlog up` "
                                "generates one; under compose, set it in .env.")
        g.tz = zone()
        return form_body_only()

    @bp.after_app_request
    def relative_redirects(resp: Response) -> Response:
        """Redirects under /reports name a path, never the request's Host (werkzeug's own
        slash redirects would send ``GET /reports`` with ``Host: evil.example`` there)."""
        location = resp.headers.get("Location")
        if 300 <= resp.status_code < 400 and location and request.path.startswith(
                auth.PATH):
            parts = urlsplit(location)
            if parts.netloc:
                resp.headers["Location"] = parts._replace(scheme="", netloc="").geturl()
        return resp

    @bp.errorhandler(WatchlogError)
    def readable_error(err: WatchlogError) -> Response:
        body = err.to_dict()
        headers = {}
        if err.details.get("retry_after") is not None:
            headers["Retry-After"] = str(err.details["retry_after"])
        titles = {400: "Check the address", 404: "Nothing found", 422: "Check the address",
                  429: "Too many requests", 503: "The store is unavailable"}
        resp = page("error.html", err.status, title=titles.get(err.status, "Error"),
                    message=body.get("message", str(err)))
        resp.headers.update(headers)
        return resp

    _routes(bp, settings)
    return bp


# ---- helpers ------------------------------------------------------------------------------


def zone() -> ZoneInfo | None:
    """The ``?tz=`` zone (None: UTC); a malformed or unknown name is a 400."""
    raw = params.arg("tz")
    if not raw or raw == "UTC":
        return None
    try:
        if not _ZONE.fullmatch(raw) or len(raw) > 64:
            raise ValueError(raw)
        return ZoneInfo(raw)
    except (ValueError, ZoneInfoNotFoundError):
        g.tz = None
        raise InvalidInput(f"tz: {raw!r} is not an IANA time zone (e.g. Europe/Paris)",
                           field="tz") from None


def link(endpoint: str, **values: Any) -> str:
    """A URL of the reports page that keeps the chosen time zone."""
    tz = g.get("tz")
    if tz is not None and "tz" not in values:
        values["tz"] = tz.key
    return url_for(endpoint, **{k: v for k, v in values.items() if v not in (None, "")})


def page(template: str, status: int = 200, **context: Any) -> Response:
    tz = g.get("tz")
    now = datetime.now(UTC)
    context.setdefault("tz_name", tz.key if tz else "UTC")
    context.setdefault("tz_offset", now.astimezone(tz).strftime("%z") if tz else "+0000")
    context.setdefault("signed_in", g.get("reports_role"))
    context.setdefault("signout_form", TokenForm() if g.get("reports_role") else None)
    html = render_template(f"reports/{template}", **context)
    return Response(html, status, mimetype="text/html",
                    headers={"Content-Security-Policy": PAGE_CSP})


def svg(data: str) -> Response:
    return Response(data, mimetype="image/svg+xml",
                    headers={"Content-Security-Policy": CHART_CSP})


def shown_time(iso: str) -> str:
    """A log's time as shown: in the chosen zone, with its offset."""
    t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    tz = g.get("tz")
    return (t.astimezone(tz) if tz else t).strftime("%Y-%m-%d %H:%M:%S %z")


def day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def form_body_only() -> Response | None:
    """A POST to a reports form must be a form: url-encoded, or multipart with plain text
    fields only. JSON (which Flask-WTF would read as form data) gets 415; a file gets 400."""
    if request.method != "POST" or request.endpoint not in FORM_ENDPOINTS:
        return None
    if not request.content_length and not request.mimetype:
        return None  # an empty post: the form finds no token and says so (400)
    if request.mimetype not in FORM_TYPES:
        return page("error.html", 415, title="Not a form",
                    message="This address takes a form (application/x-www-form-urlencoded "
                            "or multipart/form-data), as the page's own forms send it.")
    if request.files:
        return page("error.html", 400, title="Check the form",
                    message="Send every field of this form as text, not as a file.")
    return None


def safe_next(raw: str | None) -> str:
    """Where to go after sign-in: a path under /reports/ only (never another site, never
    out of it by ``..``), printable ASCII with no backslash; else the fleet day."""
    if raw and raw.isascii() and raw.isprintable() and "\\" not in raw:
        parts = urlsplit(raw)
        path = unquote(parts.path)
        segments = path.split("/")
        if (not parts.scheme and not parts.netloc and path.startswith("/reports/")
                and "." not in segments and ".." not in segments and "\\" not in path
                and path.isprintable() and not parts.fragment):
            return raw
    return url_for("reports.fleet")


P = ParamSpec("P")


def signed_in_only(view: Callable[P, ResponseReturnValue]) -> Callable[P, ResponseReturnValue]:
    """Redirect to the sign-in form without a valid session; apply the API's rate limit
    (the same budget as the key's bearer calls) to pages that read the store."""

    @wraps(view)
    def checked(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
        who = auth.signed_in()
        if who is None:
            return redirect(url_for("reports.signin", next=request.full_path.rstrip("?")))
        g.reports_role = who[0]
        limit = current_app.extensions.get("watchlog_rate_limit")
        if limit is not None:
            limit.check(who[1])
        return view(*args, **kwargs)

    return checked


def fleet_days(last: date) -> list[dict[str, Any]]:
    return [daily_report_body(last - timedelta(days=i)) for i in range(TREND_DAYS - 1, -1, -1)]


def user_range() -> tuple[date, date]:
    to = params.day("to", params.today())
    return params.day("from", to - timedelta(days=6)), to


# ---- routes -------------------------------------------------------------------------------


def _routes(bp: Blueprint, settings: Settings) -> None:  # noqa: C901 (one view per page)

    @bp.route("/sign-in", methods=["GET", "POST"])
    def signin() -> ResponseReturnValue:
        form = SignInForm()
        nxt = safe_next(request.args.get("next"))
        if request.method == "GET":
            if auth.signed_in() is not None:
                return redirect(nxt)
            note = "You are signed out." if request.args.get("out") else ""
            return page("signin.html", form=form, next=nxt, note=note)
        if not form.validate_on_submit():
            if "csrf_token" in form.errors:
                return page("signin.html", 400, form=form, next=nxt,
                            error="This form has expired or lacks its security token: "
                                  "sign in again from this page.")
            return page("signin.html", 400, form=form, next=nxt, error="Enter a key.")
        role, why = auth.role_of_key(form.key.data or "")
        if role is None:
            status = 401 if why == "unknown key" else 403
            return page("signin.html", status, form=SignInForm(formdata=None), next=nxt,
                        error=f"Not signed in: {why}.")
        auth.sign_in(role, form.key.data or "")
        return redirect(nxt)

    @bp.post("/sign-out")
    def signout() -> ResponseReturnValue:
        form = TokenForm()
        if not form.validate_on_submit():
            return page("error.html", 400, title="Not signed out",
                        message="This form has expired or lacks its security token: "
                                "reload the page and sign out again.")
        auth.sign_out()
        return redirect(url_for("reports.signin", out=1))

    @bp.get("/")
    @signed_in_only
    def fleet() -> Response:
        d = params.day("date", params.today())
        report = daily_report_body(d)
        trend = fleet_days(d)
        types = sorted(report["by_type"].items(), key=lambda kv: -kv[1]["count"])
        return page("fleet.html", day=d, report=report, types=types, trend=trend,
                    prev_day=d - timedelta(days=1), next_day=d + timedelta(days=1),
                    measures=MEASURES, trend_has_data=any(t["count"] for t in trend))

    @bp.get("/user")
    @signed_in_only
    def jump() -> ResponseReturnValue:
        """The fleet page's "go to a user" form."""
        user_id = (params.arg("user_id") or "").strip()
        if not schema.is_safe_id(user_id):
            raise InvalidInput("user_id: 1-64 of A-Z a-z 0-9 . _ @ -", field="user_id")
        return redirect(link("reports.user", user_id=user_id))

    @bp.get("/users/<user_id>")
    @signed_in_only
    def user(user_id: str) -> Response:
        frm, to = user_range()
        summary = user_summary_body(user_id, frm, to)
        type_code = params.activity_type()
        limit = params.integer("limit", PAGE_SIZE, 1, settings.max_page)
        cursor = params.arg("cursor") or None
        logs = user_activities_body(user_id, day_ms(frm), day_ms(to) + DAY_MS - 1, limit,
                                    cursor, type_code)
        rows = msgspec.to_builtins(logs["items"])
        for r in rows:
            r["shown_time"] = shown_time(r["timestamp"])
        context: dict[str, Any] = dict(user_id=user_id, summary=summary, rows=rows, frm=frm, to=to,
                       next_cursor=logs["next_cursor"], cursor=cursor, limit=limit,
                       activity_type=params.arg("activity_type") or "",
                       types=schema.ACTIVITY_TYPES, page_no=params.integer("page", 1, 1, 10**9))
        if not summary["total"]["count"] and not rows and cursor is None:
            # as the JSON API (200, zeros) and the empty fleet day: an answer, not an error
            return page("user.html", empty=True, **context)
        return page("user.html", empty=False, **context)

    @bp.route("/export", methods=["GET", "POST"])
    @signed_in_only
    def export() -> ResponseReturnValue:
        today = params.today()
        values = request.form if request.method == "POST" else request.args
        frm = params.day("from", today, values)
        to = params.day("to", today, values)
        fmt = params.arg("format", values) or "csv"
        context: dict[str, Any] = dict(frm=frm, to=to, fmt=fmt, formats=EXPORT_FORMATS,
                       types=schema.ACTIVITY_TYPES,
                       activity_type=params.arg("activity_type", values) or "",
                       max_days=settings.max_range_days)
        if request.method == "GET":
            return page("export.html", form=TokenForm(), **context)
        form = TokenForm()
        if not form.validate_on_submit():
            return page("export.html", 400, form=form, **context,
                        error="This form has expired or lacks its security token: "
                              "reload the page and download again.")
        params.days_between(frm, to, settings.max_range_days)  # the one range check
        resp = export_body(day_ms(frm), day_ms(to) + DAY_MS - 1,
                           params.activity_type(values), fmt)
        ext = "csv" if fmt == "csv" else fmt
        resp.headers["Content-Disposition"] = (
            f"attachment; filename=activities-{frm.isoformat()}-{to.isoformat()}.{ext}")
        return resp

    @bp.get("/extractors")
    @signed_in_only
    def extractors() -> Response:
        return page("extractors.html", items=extractor_items())

    # ---- charts (images of the page; the same numbers are in its tables) ----

    @bp.get("/charts/fleet/<measure>.svg")
    @signed_in_only
    def fleet_chart(measure: str) -> Response:
        if measure not in MEASURES:
            raise NotFound(f"no chart {measure!r}; one of {', '.join(MEASURES)}")
        d = params.day("date", params.today())
        figure, unit = MEASURES[measure]
        report = daily_report_body(d)
        types = sorted(report["by_type"].items(), key=lambda kv: -kv[1]["count"])
        return svg(charts.bars(f"{measure.capitalize()} by activity type, {d} (UTC)",
                               [t for t, _ in types], [f[figure] for _, f in types], unit))

    @bp.get("/charts/trend.svg")
    @signed_in_only
    def trend_chart() -> Response:
        d = params.day("date", params.today())
        trend = fleet_days(d)
        return svg(charts.lines(f"{TREND_DAYS} days to {d} (UTC days)",
                                [t["date"][5:] for t in trend],
                                {"logs": [t["count"] for t in trend],
                                 "active users": [t["active_users"] for t in trend]}))

    @bp.get("/charts/users/<user_id>.svg")
    @signed_in_only
    def user_chart(user_id: str) -> Response:
        frm, to = user_range()
        summary = user_summary_body(user_id, frm, to)
        days = summary["days"]
        kinds = sorted({t for day in days for t in day["by_type"]})
        return svg(charts.stacked(
            f"Logs of user {user_id} per day, {frm} to {to} (UTC)",
            [day["date"][5:] for day in days],
            {k: [day["by_type"].get(k, {}).get("count", 0) for day in days] for k in kinds}))

    @bp.app_template_filter("number")
    def number(value: object) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):  # km to the metre, kcal to the tenth: as the API
            return f"{value:,.3f}".rstrip("0").rstrip(".")
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    @bp.app_template_global("now_utc")
    def now_utc() -> str:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
