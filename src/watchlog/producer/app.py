"""The producer API: watches send activity logs here; they are validated and stored."""

from __future__ import annotations

import time
import zlib
from typing import Any

import msgspec
from flask import Blueprint, Flask, Response, g, request

from watchlog import metrics, schema
from watchlog.errors import (
    Forbidden,
    InvalidInput,
    Malformed,
    PayloadTooLarge,
    UnsupportedMediaType,
    WatchlogError,
)
from watchlog.producer.openapi import producer_spec
from watchlog.settings import Settings
from watchlog.store import Store
from watchlog.web.auth import requires
from watchlog.web.common import create_base_app, json_response, settings, store

JSON_TYPES = ("application/json", "application/x-ndjson", "application/ndjson")
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


def create_app(settings: Settings | None = None, store: Store | None = None) -> Flask:
    """Build the producer app (the application factory)."""
    settings = settings or Settings.from_env()
    app = create_base_app("producer", settings, store)
    app.extensions["watchlog_openapi"] = producer_spec
    app.register_blueprint(ingest_blueprint())
    from watchlog.web.limits import init_rate_limit

    init_rate_limit(app, settings)
    return app


def read_body(limit: int) -> bytes:
    """Return the request body, decompressed (gzip or zstd), never more than ``limit``."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
    raw = request.get_data(cache=False)
    encoding = (request.headers.get("Content-Encoding") or "identity").lower()
    if encoding == "identity":
        body = raw
    elif encoding in ("gzip", "x-gzip"):
        body = _gunzip(raw, limit)
    elif encoding == "zstd":
        body = _unzstd(raw, limit)
    else:
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r}: use gzip, zstd or none")
    if len(body) > limit:
        raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
    return body


def _gunzip(raw: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error:
        raise Malformed("body: not valid gzip") from None
    if len(out) > limit or d.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body over the limit of {limit} bytes")
    return out


def _unzstd(raw: bytes, limit: int) -> bytes:
    import zstandard

    try:
        with zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            out = reader.read(limit + 1)
    except zstandard.ZstdError:
        raise Malformed("body: not valid zstd") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"decompressed body over the limit of {limit} bytes")
    return out


def split_items(body: bytes, mimetype: str) -> tuple[list[bytes], bool]:
    """Return the raw JSON items of a body, and whether it was a batch."""
    if mimetype == "application/json":
        stripped = body.lstrip()
        if stripped[:1] == b"[":
            try:
                return [bytes(r) for r in _raw_list.decode(body)], True
            except msgspec.DecodeError as e:
                raise Malformed(f"malformed JSON: {e}") from None
            except msgspec.ValidationError:
                raise Malformed("body: a JSON object or an array of objects") from None
        return [body], False
    lines = [ln for ln in body.split(b"\n") if ln.strip()]
    return lines, True


def validate_items(items: list[bytes], device: str | None
                   ) -> tuple[list[schema.Event], list[int], dict[int, WatchlogError]]:
    """Validate every item; return the events, their positions and the rejections."""
    events, where, errors = [], [], {}
    for i, raw in enumerate(items):
        try:
            a = schema.decode(raw)
            if device is not None and a.device_id != device:
                raise Forbidden(f"device_id: this token may only write for {device!r}",
                                field="device_id")
            events.append(_in_retention(schema.to_event(a)))
            where.append(i)
        except WatchlogError as e:
            errors[i] = e
    return events, where, errors


def _in_retention(e: schema.Event) -> schema.Event:
    """Refuse a log older than the retention window: it would be stored to expire at once.

    (The future bound, 24 h, is the schema's.) docs/security.md, "Bounds".
    """
    days = settings().retention_days
    if e.ts < time.time() * 1000 - days * 86400_000:
        raise InvalidInput(f"timestamp: older than the retention of {days} days "
                           "(WATCHLOG_RETENTION_DAYS)", field="timestamp")
    return e


def ingest_blueprint() -> Blueprint:
    bp = Blueprint("ingest", __name__)

    @bp.post("/v1/activities")
    @requires("ingest")
    def post_activities() -> Response:
        """Store one log (JSON object), or a batch (JSON array or NDJSON)."""
        mimetype = request.mimetype
        if mimetype not in JSON_TYPES:
            metrics.LOGS_REJECTED.labels("unsupported_media_type").inc()
            raise UnsupportedMediaType(
                "Content-Type must be application/json or application/x-ndjson")
        s = settings()
        items, batch = split_items(read_body(s.max_body_bytes), mimetype)
        if len(items) > s.max_batch:
            metrics.LOGS_REJECTED.labels("too_large").inc(len(items))
            raise PayloadTooLarge(f"batch of {len(items)} logs over the limit of {s.max_batch}"
                                  " (WATCHLOG_MAX_BATCH)")
        if batch and not items:
            raise InvalidInput("body: the batch is empty")
        return _ingest(items, batch, s)

    @bp.post("/log_activity")
    @requires("ingest")
    def log_activity() -> Response:
        """The seed's endpoint: one log with every seed field present."""
        try:
            doc = msgspec.json.decode(request.get_data(cache=False))
        except msgspec.DecodeError:
            return json_response({"error": "Invalid JSON"}, 400)
        missing = [f for f in schema.REQUIRED_SEED_FIELDS
                   if not isinstance(doc, dict) or f not in doc]
        if missing:
            return json_response({"error": f"Missing fields: {', '.join(missing)}"}, 400)
        events, _, errors = validate_items([msgspec.json.encode(doc)], _device())
        if errors:
            raise errors[0]
        store().ingest(events)
        _count(events, [True])
        return json_response({"message": "Activity logged successfully",
                              "event_id": events[0].event_id})

    return bp


def _device() -> str | None:
    p = g.get("principal")
    return p.device_id if p is not None else None


def _ingest(items: list[bytes], batch: bool, s: Settings) -> Response:
    events, where, errors = validate_items(items, _device())
    for e in errors.values():
        metrics.LOGS_REJECTED.labels(e.code).inc()
    if not batch and errors:
        raise errors[0]
    if any(isinstance(e, Forbidden) for e in errors.values()):
        raise next(e for e in errors.values() if isinstance(e, Forbidden))
    created = store().ingest(events)
    metrics.BATCH_SIZE.observe(len(items))
    _count(events, created)
    if not batch:
        status = "created" if created[0] else "duplicate"
        return json_response({"status": status, "event_id": events[0].event_id},
                             201 if created[0] else 200)
    return json_response(_batch_result(len(items), events, where, created, errors))


def _batch_result(n: int, events: list[schema.Event], where: list[int], created: list[bool],
                  errors: dict[int, WatchlogError]) -> dict[str, Any]:
    results: list[dict[str, Any] | None] = [None] * n
    for e, i, c in zip(events, where, created, strict=True):
        results[i] = {"index": i, "status": "created" if c else "duplicate",
                      "event_id": e.event_id}
    for i, err in errors.items():
        results[i] = {"index": i, "status": "rejected", **err.to_dict()}
    n_created = sum(created)
    return {"created": n_created, "duplicate": len(created) - n_created,
            "rejected": len(errors), "items": results}


def _count(events: list[schema.Event], created: list[bool]) -> None:
    tally: dict[tuple[str, str], int] = {}
    for e, c in zip(events, created, strict=True):
        key = (schema.ACTIVITY_TYPES[e.tcode], "created" if c else "duplicate")
        tally[key] = tally.get(key, 0) + 1
    for (t, result), n in tally.items():
        metrics.LOGS_INGESTED.labels(t, result).inc(n)
