"""The read routes: a user's logs and summary, the daily report, the export, the seed's list."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any, TypedDict
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app

from watchlog.api import params
from watchlog.api.auth import requires
from watchlog.api.consumer.export import EXPORT_FORMATS, export_response
from watchlog.api.context import json_response, settings, store
from watchlog.core import schema
from watchlog.core.errors import InvalidInput
from watchlog.core.metrics import timed
from watchlog.store import arrivals
from watchlog.store.cluster import unavailable_as_503
from watchlog.store.reader import merge_aggregates

bp = Blueprint("queries", __name__)


class Totals(TypedDict):
    """The API's figures of one set of aggregates."""

    count: int
    duration: int
    distance: float
    calories_burned: float
    avg_heart_rate: float | None
    max_heart_rate: int | None


class Summary(TypedDict):
    total: Totals
    by_type: dict[str, Totals]


def totals(agg: dict[str, int]) -> Totals:
    """Turn raw aggregate fields into the API's figures (units as the seed's)."""
    k = agg.get("k", 0)
    return {
        "count": agg.get("n", 0),
        "duration": agg.get("d", 0),
        "distance": agg.get("m", 0) / 1000,
        "calories_burned": agg.get("c", 0) / 10,
        "avg_heart_rate": round(agg.get("h", 0) / k, 1) if k else None,
        "max_heart_rate": agg.get("x") if k else None,
    }


def summarize(by_type: dict[str, dict[str, int]]) -> Summary:
    total: dict[str, int] = {}
    for agg in by_type.values():
        merge_aggregates(total, agg)
    return {"total": totals(total), "by_type": {t: totals(a) for t, a in by_type.items()}}


_INTEGER = re.compile(r"^(0|[1-9][0-9]{0,17})$")


def as_sent(user_id: str) -> int | str:
    """Return a path's user id as watches send it: an integer when it is one (7, not "7")."""
    return int(user_id) if _INTEGER.match(user_id) else user_id


def _user_key(user_id: str) -> str:
    if not schema.is_safe_id(user_id):
        raise InvalidInput("user_id: 1-64 of A-Z a-z 0-9 . _ @ -", field="user_id")
    return user_id


@bp.get("/v1/users/<user_id>/activities")
@requires("reader")
def user_activities(user_id: str) -> Response:
    """A user's logs in event-time order, a page at a time (default: last 24 h)."""
    s = settings()
    start, to = params.time_range(s.max_range_days)
    limit = params.integer("limit", 100, 1, s.max_page)
    return json_response(user_activities_body(user_id, start, to, limit,
                                              params.arg("cursor") or None,
                                              params.activity_type()))


@bp.get("/v1/users/<user_id>/summary")
@requires("reader")
def user_summary(user_id: str) -> Response:
    """A user's totals over a range of days, per day and per activity type."""
    to = params.day("to", params.today())
    start = params.day("from", to - timedelta(days=6))
    return json_response(user_summary_body(user_id, start, to))


@bp.get("/v1/reports/daily")
@requires("reader")
def daily_report() -> Response:
    """Fleet-wide figures of one UTC day, read from aggregates."""
    d = params.day("date", params.today())
    return json_response(daily_report_body(d))


@bp.get("/v1/activities/export")
@requires("reader")
def export() -> Response:
    """Every log of a range, streamed in event-time order (NDJSON, CSV or Parquet)."""
    s = settings()
    fmt = params.arg("format") or "ndjson"
    start, to = params.time_range(s.max_range_days)
    return export_body(start, to, params.activity_type(), fmt)


@bp.get("/activity_logs")
@requires("reader")
def activity_logs() -> Response:
    """The seed's list, by arrival, oldest first: the latest ``limit`` logs, or with
    ``after`` what arrived since; the next cursor is in ``X-Next-Cursor``."""
    limit = params.integer("limit", 100, 1, settings().max_page)
    raw = params.arg("after")
    st = store()
    with timed("query"), unavailable_as_503("recent"):
        if raw:
            entries, cursor = arrivals.after(st.rc, arrivals.decode_cursor(raw), limit)
            stored = bool(entries) or arrivals.anything_stored(st.rc)
        else:
            entries, cursor, stored = arrivals.latest(st.rc, limit)
        found = arrivals.bodies(st.runner, entries)
    if not stored:
        return json_response({"message": "No activity logs found"}, 404)
    nxt = arrivals.encode_cursor(cursor)
    link = f'</activity_logs?{urlencode({"after": nxt, "limit": limit})}>; rel="next"'
    return json_response(schema.bodies_out(found),
                         headers={"X-Next-Cursor": nxt, "Link": link})


# What a JSON view answers, as functions: the reports page (watchlog.api.consumer.reports)
# calls the same ones, so a number on a page and in the API cannot come from two code paths.


def user_activities_body(user_id: str, start: int, to: int, limit: int, cursor: str | None,
                         type_code: int | None) -> dict[str, Any]:
    """A page of a user's logs in event-time order, and the cursor of the next one."""
    bodies, nxt = store().user_page(_user_key(user_id), start, to, limit, cursor, type_code)
    return {"items": schema.bodies_out(bodies), "next_cursor": nxt}


def user_summary_body(user_id: str, start: date, to: date) -> dict[str, Any]:
    """A user's totals over the UTC days ``start``..``to`` (both included), and per day."""
    days = params.days_between(start, to, settings().max_range_days)
    per_day = store().user_days(_user_key(user_id), [d.strftime("%Y%m%d") for d in days])
    whole: dict[str, dict[str, int]] = {}
    for by_type in per_day:
        for t, agg in by_type.items():
            merge_aggregates(whole.setdefault(t, {}), agg)
    return {
        "user_id": as_sent(user_id), "from": start.isoformat(), "to": to.isoformat(),
        **summarize(whole),
        "days": [{"date": d.isoformat(), **summarize(bt)}
                 for d, bt in zip(days, per_day, strict=True) if bt],
    }


def daily_report_body(d: date) -> dict[str, Any]:
    """Fleet-wide figures of one UTC day, read from aggregates."""
    users, by_type = store().fleet_day(d.strftime("%Y%m%d"))
    s = summarize(by_type)
    return {"date": d.isoformat(), "active_users": users,
            "count": s["total"]["count"], **s}


def export_body(start: int, to: int, type_code: int | None, fmt: str) -> Response:
    """Every log of [start, to] (ms), streamed in event-time order as ``fmt``."""
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"format: one of {', '.join(EXPORT_FORMATS)}", status=400,
                           field="format", accepted=list(EXPORT_FORMATS))
    return export_response(store().export(start, to, type_code), fmt, settings().send_timeout,
                           current_app.extensions["watchlog_stream_slots"])
