"""Incremental extraction endpoints: named extractors over the partition feeds.

Extractors are made only by ``PUT /v1/extractors/<name>``, at most
``WATCHLOG_MAX_EXTRACTORS`` of them; every other route answers 404 for an unknown name
(docs/security.md). The metric labels that carry a name are bounded by that cap.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
from flask import Blueprint, Response, request

from watchlog import keys, metrics, schema
from watchlog.errors import Conflict, InvalidInput, Malformed
from watchlog.metrics import ScrapeTimeGauges
from watchlog.store import Store
from watchlog.web import params
from watchlog.web.auth import requires
from watchlog.web.common import json_response, settings, store

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AckBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[str]


class CreateBody(msgspec.Struct, forbid_unknown_fields=True):
    start: str = "earliest"


def _name(name: str) -> str:
    if not NAME.fullmatch(name):  # fullmatch: `$` alone also matches before a final \n
        raise InvalidInput("name: 1-64 of A-Z a-z 0-9 . _ -", field="name")
    return name


def _decode(raw: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as e:
        raise schema.invalid(str(e)) from None
    except msgspec.DecodeError as e:
        raise Malformed(f"malformed JSON: {e}") from None


_LABELS: set[str] = set()  # extractor names this process has put in a metric label


def _label(name: str) -> str:
    """``name`` as a label value, or ``other`` once this process has used as many names as
    extractors may exist: names come and go, the label set stays bounded."""
    if name not in _LABELS:
        if len(_LABELS) >= settings().max_extractors:
            return "other"
        _LABELS.add(name)
    return name


def _create(name: str, start: str, reset: bool) -> None:
    """Create ``name``: 409 when it exists (unless ``reset``) or the cap is reached.

    Two creations racing at the cap may both pass: the cap bounds growth, not to the unit.
    """
    existing = store().extractor_infos()
    if name in existing:
        if not reset:
            raise Conflict(f"extractor {name!r} exists; reuse it, or PUT ?reset=true to "
                           "start it again", field="name")
        store().extractor_delete(name)
    elif len(existing) >= settings().max_extractors:
        raise Conflict(f"{len(existing)} extractors exist, the most allowed "
                       "(WATCHLOG_MAX_EXTRACTORS); delete one first", field="name")
    store().extractor_create(name, start)


def extraction_blueprint() -> Blueprint:
    bp = Blueprint("extraction", __name__)

    @bp.get("/v1/extractors")
    @requires("reader")
    def list_extractors() -> Response:
        """Every extractor with its lag and pending count."""
        return json_response({"items": [{"name": n, **info}
                                        for n, info in store().extractor_infos().items()]})

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
            metrics.EXTRACTION_REDELIVERED.labels(_label(name)).inc(redelivered)
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

    return bp


def scrape_gauges(st: Store) -> ScrapeTimeGauges:
    """Gauges read from Redis at scrape time: extraction lag, today's fleet figures."""

    def read() -> list[tuple[str, str, dict[str, str], float]]:
        out: list[tuple[str, str, dict[str, str], float]] = []
        for n, info in st.extractor_infos().items():
            out.append(("watchlog_extraction_lag", "Logs not yet delivered to the extractor",
                        {"extractor": n}, info["lag"]))
            out.append(("watchlog_extraction_pending", "Logs delivered, not acknowledged",
                        {"extractor": n}, info["pending"]))
        users, by_type = st.fleet_day(keys.day_of(int(time.time() * 1000)))
        out.append(("watchlog_fleet_active_users", "Users active today (UTC)", {}, users))
        for t, agg in by_type.items():
            out.append(("watchlog_fleet_logs_today", "Logs today (UTC) per activity type",
                        {"activity_type": t}, agg.get("n", 0)))
            if agg.get("k"):
                out.append(("watchlog_fleet_heart_rate_avg", "Average heart rate today (bpm)",
                            {"activity_type": t}, agg["h"] / agg["k"]))
        return out

    return ScrapeTimeGauges(read)
