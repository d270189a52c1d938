"""Incremental extraction endpoints: named extractors over the partition feeds.

Extractors are made only by ``PUT /v1/extractors/<name>``, at most
``WATCHLOG_MAX_EXTRACTORS`` of them; every other route answers 404 for an unknown name
(docs/security.md). The metric labels that carry a name are bounded by that cap.
"""

from __future__ import annotations

import re
import time
from typing import Any, TypeVar

import msgspec
from flask import Blueprint, Response, request

from watchlog.api import params
from watchlog.api.auth import requires
from watchlog.api.context import json_response, settings, store
from watchlog.core import keys, metrics, schema
from watchlog.core.errors import Conflict, InvalidInput
from watchlog.core.metrics import ScrapeTimeGauges
from watchlog.store import Store

T = TypeVar("T")

bp = Blueprint("extraction", __name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AckBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[str]


class CreateBody(msgspec.Struct, forbid_unknown_fields=True):
    start: str = "earliest"


def _name(name: str) -> str:
    if not NAME.fullmatch(name):  # fullmatch: `$` alone also matches before a final \n
        raise InvalidInput("name: 1-64 of A-Z a-z 0-9 . _ -", field="name")
    return name


def _decode(raw: bytes, kind: type[T]) -> T:
    return schema.decode_json(raw or b"{}", kind)


def _create(name: str, start: str, reset: bool) -> None:
    """Create ``name``: 409 when it exists (unless ``reset``) or the cap is reached.

    Two creations racing at the cap may both pass: the cap bounds growth, not to the unit.
    """
    existing = store().extractor_infos()
    if name in existing and existing[name]["partitions"] < keys.PARTITIONS and not reset:
        # A creation cut short (a master refused writes half-way): finish it, idempotently.
        store().extractor_create(name, start)
        return
    if name in existing:
        if not reset:
            raise Conflict(f"extractor {name!r} exists; reuse it, or PUT ?reset=true to "
                           "start it again", field="name")
        store().extractor_delete(name)
    elif len(existing) >= settings().max_extractors:
        raise Conflict(f"{len(existing)} extractors exist, the most allowed "
                       "(WATCHLOG_MAX_EXTRACTORS); delete one first", field="name")
    store().extractor_create(name, start)


def extractor_items() -> list[dict[str, Any]]:
    """Every extractor with its lag and pending count (the API's list; the reports page's)."""
    return [{"name": n, **info} for n, info in store().extractor_infos().items()]


@bp.get("/v1/extractors")
@requires("reader")
def list_extractors() -> Response:
    """Every extractor with its lag and pending count."""
    return json_response({"items": extractor_items()})


@bp.put("/v1/extractors/<name>")
@requires("reader")
def create(name: str) -> Response:
    """Create an extractor from the earliest retained log or from now on.

    An existing one answers 409 unless ``?reset=true``: then it is deleted and created
    again from ``start`` (everything pending or not yet delivered is forgotten).
    """
    name = _name(name)
    reset = params.flag("reset")
    body = _decode(request.get_data(), CreateBody)
    if body.start not in ("earliest", "latest"):
        raise InvalidInput("start: earliest or latest", field="start")
    _create(name, body.start, reset)
    return json_response({"name": name, **store().extractor_info(name)})


@bp.get("/v1/extractors/<name>")
@requires("reader")
def describe(name: str) -> Response:
    """An extractor's lag (not yet delivered) and pending (delivered, not acknowledged)."""
    return json_response({"name": name, **store().extractor_info(_name(name))})


@bp.delete("/v1/extractors/<name>")
@requires("reader")
def delete(name: str) -> Response:
    """Delete an extractor and its position (404 when there is none)."""
    store().extractor_info(_name(name))  # NotFound: 404
    store().extractor_delete(name)
    return json_response({"name": name, "deleted": True})


@bp.post("/v1/extractors/<name>/batches")
@requires("reader")
def batch(name: str) -> Response:
    """The next batch: redeliveries past the visibility timeout first, then new logs."""
    name = _name(name)
    limit = params.integer("max", 500, 1, settings().max_page)
    visibility = params.integer("visibility_timeout", int(settings().extract_visibility_s),
                                1, 3600)
    consumer = params.arg("consumer") or "default"
    if not NAME.fullmatch(consumer):
        raise InvalidInput("consumer: 1-64 of A-Z a-z 0-9 . _ -", field="consumer")
    # an unknown name is NotFound (404): only PUT creates an extractor
    items, redelivered = store().extractor_batch(name, consumer, limit, visibility * 1000)
    if redelivered:
        metrics.EXTRACTION_REDELIVERED.inc(redelivered)
    docs = msgspec.to_builtins(schema.bodies_out([b for _, b in items]))
    return json_response({
        "items": [{"feed_id": fid, **doc} for (fid, _), doc in zip(items, docs, strict=True)],
        "redelivered": redelivered})


@bp.post("/v1/extractors/<name>/ack")
@requires("reader")
def ack(name: str) -> Response:
    """Acknowledge delivered logs by feed id; they are never delivered again."""
    body = _decode(request.get_data(), AckBody)
    if len(body.ids) > 10 * settings().max_page:
        raise InvalidInput(f"ids: at most {10 * settings().max_page}", field="ids")
    name = _name(name)
    not_acked = store().extractor_ack(name, body.ids)
    acked = len(body.ids) - len(not_acked)
    if not acked:
        store().extractor_info(name)  # an unknown extractor acknowledges nothing: 404
    # Ids not pending (already acknowledged, never delivered, unknown) are named, never
    # silently counted as done.
    return json_response({"acknowledged": acked, "acked": acked, "not_acked": not_acked})


def scrape_gauges(st: Store) -> ScrapeTimeGauges:
    """Gauges read from Redis at scrape time: extraction lag and age, today's fleet figures.

    Extractor names are chosen by readers: at most ``MAX_LABELLED_EXTRACTORS`` are named (the
    most behind first), the rest summed under ``extractor="_other"``. No health figure (heart
    rate) is exposed: ``/metrics`` has no authentication (docs/security.md).
    """

    def read() -> list[tuple[str, str, dict[str, str], float]]:
        out: list[tuple[str, str, dict[str, str], float]] = []
        now_ms = int(time.time() * 1000)
        infos = st.extractor_infos()
        oldest = st.extractor_oldest()
        for n, info in _bounded(infos, oldest):
            out.append(("watchlog_extraction_lag", "Logs not yet delivered to the extractor",
                        {"extractor": n}, info["lag"]))
            out.append(("watchlog_extraction_pending", "Logs delivered, not acknowledged",
                        {"extractor": n}, info["pending"]))
            out.append(("watchlog_extraction_oldest_waiting_seconds",
                        "Age of the oldest log the extractor has not acknowledged (0: none)",
                        {"extractor": n},
                        max(0, now_ms - info["oldest"]) / 1000 if info["oldest"] else 0.0))
        users, by_type = st.fleet_day(keys.day_of(now_ms))
        out.append(("watchlog_fleet_active_users", "Users active today (UTC)", {}, users))
        for t, agg in by_type.items():
            out.append(("watchlog_fleet_logs_today", "Logs today (UTC) per activity type",
                        {"activity_type": t}, agg.get("n", 0)))
        return out

    return ScrapeTimeGauges(read)


def _bounded(infos: dict[str, dict[str, int]],
             oldest: dict[str, int]) -> list[tuple[str, dict[str, int]]]:
    """Return (label, figures) for the most-behind extractors, the rest folded into _other."""
    rows = sorted(((n, {**i, "oldest": oldest.get(n, 0)}) for n, i in infos.items()),
                  key=lambda r: (r[1]["oldest"] or float("inf"), -r[1]["lag"], r[0]))
    named, rest = rows[:metrics.MAX_LABELLED_EXTRACTORS], rows[metrics.MAX_LABELLED_EXTRACTORS:]
    if rest:
        ages = [r["oldest"] for _, r in rest if r["oldest"]]
        named.append(("_other", {"lag": sum(r["lag"] for _, r in rest),
                                 "pending": sum(r["pending"] for _, r in rest),
                                 "oldest": min(ages) if ages else 0}))
    return named
