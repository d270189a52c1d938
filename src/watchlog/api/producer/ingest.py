"""The ingest routes: watches send activity logs here; they are validated and stored."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from typing import IO

import msgspec
from flask import Blueprint, Response, g, request

from watchlog.api.auth import Principal, requires
from watchlog.api.context import json_response, settings, store
from watchlog.core import keys, metrics, schema
from watchlog.core.errors import (
    Forbidden,
    InvalidInput,
    Malformed,
    PayloadTooLarge,
    UnsupportedMediaType,
    WatchlogError,
    too_deep,
)
from watchlog.core.settings import Settings
from watchlog.store import Store

JSON_TYPES = ("application/json", "application/x-ndjson", "application/ndjson")
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
PIECE = 64 * 1024  # bytes read or decompressed at a time

bp = Blueprint("ingest", __name__)


def read_body(limit: int) -> bytes:
    """Return the request body, decompressed (gzip or zstd), never more than ``limit``.

    Compressed bodies are read and decompressed a piece at a time, and decompression stops
    as soon as the output passes ``limit``: a bomb costs at most ``limit`` plus one piece
    (``test_decompression_bomb_stops_at_the_bound``), never its inflated size.
    """
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
    encoding = (request.headers.get("Content-Encoding") or "identity").lower()
    if encoding == "identity":
        if length is None:  # chunked: Werkzeug's stream ends at the limit without a word
            return _read_to_the_end(request.environ["wsgi.input"], limit)
        body = request.get_data(cache=False)
        if len(body) > limit:
            raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
        return body
    if encoding not in ("gzip", "x-gzip", "zstd"):
        metrics.LOGS_REJECTED.labels("unsupported_media_type").inc()
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r}: use gzip, zstd or none")
    stream = request.stream
    try:
        if encoding == "zstd":
            return bounded(_unzstd(stream, limit), limit)
        return bounded(_gunzip(stream), limit)
    finally:
        # Read what decompression left unread (at most the body's length, checked above, or
        # MAX_CONTENT_LENGTH), discarding it: a server that answers before the client has
        # sent its body, then closes, resets the connection and the 413 is lost.
        while stream.read(PIECE):
            pass


def _read_to_the_end(stream: IO[bytes], limit: int) -> bytes:
    """Read a body of unknown length (chunked) from the server's stream: 413 past ``limit``.

    Past the limit, up to ``limit`` more bytes are read and dropped, so that the client,
    still sending, gets the 413 rather than a reset connection; a longer body is cut.
    """
    try:
        return bounded(iter(lambda: stream.read(PIECE), b""), limit, "request body")
    except PayloadTooLarge:
        for _ in range(limit // PIECE):
            if not stream.read(PIECE):
                break
        raise


def bounded(pieces: Iterator[bytes], limit: int, what: str = "decompressed body") -> bytes:
    """Join pieces (decompressed ones, by default), stopping (413) at the first byte past
    ``limit``."""
    out: list[bytes] = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > limit:
            raise PayloadTooLarge(f"{what} over the limit of {limit} bytes")
        out.append(piece)
    return b"".join(out)


def _gunzip(stream: IO[bytes]) -> Iterator[bytes]:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        while not d.eof:
            data = d.unconsumed_tail or stream.read(PIECE)
            if not data:
                raise Malformed("body: truncated gzip")
            yield d.decompress(data, PIECE)
    except zlib.error:
        raise Malformed("body: not valid gzip") from None


def _unzstd(stream: IO[bytes], limit: int) -> Iterator[bytes]:
    import zstandard

    # A frame may ask for a window of up to 2 GiB, allocated before any output: allow no
    # more than a body under the limit could need.
    window = 1 << max(20, (limit - 1).bit_length())
    reader = zstandard.ZstdDecompressor(max_window_size=window).stream_reader(
        stream, read_size=PIECE, closefd=False)  # the request stream is drained after
    try:
        while piece := reader.read(PIECE):
            yield piece
    except zstandard.ZstdError as e:
        if "too much memory" in str(e):
            raise PayloadTooLarge(f"zstd window over {window} bytes: compress with a smaller "
                                  "window (a lower level, or --long at most "
                                  f"{window.bit_length() - 1})") from None
        raise Malformed("body: not valid zstd") from None
    finally:
        reader.close()


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
            except RecursionError:
                raise too_deep() from None
        return [body], False
    lines = [ln for ln in body.split(b"\n") if ln.strip()]
    return lines, True


def validate_items(items: list[bytes], writer: Principal | None, retention_days: int
                   ) -> tuple[list[schema.Event], list[int], dict[int, WatchlogError]]:
    """Validate every item; return the events, their positions and the rejections.

    A device token's item for another device or another user is a ``Forbidden`` rejection
    (``Principal.may_write``; any other principal may write any log).
    """
    events, where, errors = [], [], {}
    for i, raw in enumerate(items):
        try:
            a = schema.decode(raw)
            if writer is not None:
                writer.may_write(a.device_id, str(a.user_id))
            events.append(_in_retention(schema.to_event(a), retention_days))
            where.append(i)
        except WatchlogError as e:
            errors[i] = e
    return events, where, errors


def _in_retention(e: schema.Event, days: int) -> schema.Event:
    """Refuse a log older than the retention window: it would be stored to expire at once.

    (The future bound, 24 h, is the schema's.) docs/security.md, "Bounds".
    """
    if e.ts < time.time() * 1000 - days * keys.DAY_MS:
        raise InvalidInput(f"timestamp: older than the retention of {days} days "
                           "(WATCHLOG_RETENTION_DAYS)", field="timestamp")
    return e


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
    except msgspec.DecodeError as e:  # the seed's error, and a message as everywhere
        return json_response({"error": "Invalid JSON", "message": f"malformed JSON: {e}"},
                             400)
    except RecursionError:
        return json_response({"error": "Invalid JSON", "message": too_deep().message}, 400)
    missing = [f for f in schema.REQUIRED_SEED_FIELDS
               if not isinstance(doc, dict) or f not in doc]
    if missing:
        names = ", ".join(missing)
        return json_response({"error": f"Missing fields: {names}",
                              "message": f"missing fields: {names}", "field": missing[0]},
                             400)
    try:
        raw = msgspec.json.encode(doc)
    except RecursionError:  # near the limit: decoded, but deeper than encoding allows
        return json_response({"error": "Invalid JSON", "message": too_deep().message}, 400)
    events, _, errors = validate_items([raw], g.get("principal"), settings().retention_days)
    if errors:
        raise errors[0]
    store_logs(store(), events, 1)
    return json_response({"message": "Activity logged successfully",
                          "event_id": events[0].event_id})


def _ingest(items: list[bytes], batch: bool, s: Settings) -> Response:
    events, where, errors = validate_items(items, g.get("principal"), s.retention_days)
    for e in errors.values():
        metrics.LOGS_REJECTED.labels(e.code).inc()
    if not batch and errors:
        raise errors[0]
    if any(isinstance(e, Forbidden) for e in errors.values()):
        raise next(e for e in errors.values() if isinstance(e, Forbidden))
    created = store_logs(store(), events, len(items))
    if not batch:
        return json_response(*single_answer(events[0], created[0]))
    return json_response(_batch_result(len(items), events, where, created, errors))


def _batch_result(n: int, events: list[schema.Event], where: list[int], created: list[bool],
                  errors: dict[int, WatchlogError]) -> dict[str, object]:
    results: list[dict[str, object] | None] = [None] * n
    for e, i, c in zip(events, where, created, strict=True):
        results[i] = {"index": i, "status": "created" if c else "duplicate",
                      "event_id": e.event_id}
    for i, err in errors.items():
        results[i] = {"index": i, "status": "rejected", **err.to_dict()}
    n_created = sum(created)
    return {"created": n_created, "duplicate": len(created) - n_created,
            "rejected": len(errors), "items": results}


def store_logs(into: Store, events: list[schema.Event], items: int) -> list[bool]:
    """Store validated events; count the request's size and each log, created or duplicate."""
    created = into.ingest(events)
    metrics.BATCH_SIZE.observe(items)
    _count_logs(events, created)
    return created


def single_answer(event: schema.Event, created: bool) -> tuple[dict[str, object], int]:
    """The answer to a single log: 201 created, or 200 duplicate."""
    status = "created" if created else "duplicate"
    return {"status": status, "event_id": event.event_id}, 201 if created else 200


def _count_logs(events: list[schema.Event], created: list[bool]) -> None:
    tally: dict[tuple[str, str], int] = {}
    for e, c in zip(events, created, strict=True):
        key = (schema.ACTIVITY_TYPES[e.type_code], "created" if c else "duplicate")
        tally[key] = tally.get(key, 0) + 1
    for (t, result), n in tally.items():
        metrics.LOGS_INGESTED.labels(t, result).inc(n)
