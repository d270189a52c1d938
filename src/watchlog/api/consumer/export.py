"""Streamed export: NDJSON, CSV or Parquet, written a chunk at a time (memory stays bounded)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import cast

import msgspec
from flask import Response, request, stream_with_context

from watchlog.api.bodies import StreamSlots, send_within

# (pyarrow loads with the worker, not during the first Parquet export)
from watchlog.api.consumer.parquet import parquet_chunks
from watchlog.core.schema import bodies_out

CSV_FIELDS = ("event_id", "user_id", "activity_type", "timestamp", "duration", "distance",
              "heart_rate", "calories_burned", "latitude", "longitude", "device_id",
              "activity_status")
CHUNK = 1000
EXPORT_FORMATS = ("ndjson", "csv", "parquet")
_lines = msgspec.json.Encoder()
_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def neutralize(value: object) -> object:
    """Quote a text cell a spreadsheet would run as a formula (numbers stay numbers)."""
    if isinstance(value, str) and value.startswith(_DANGEROUS):
        return "'" + value
    return value


def ndjson_chunks(bodies: Iterable[bytes]) -> Iterator[bytes]:
    it = iter(bodies)
    while chunk := list(islice(it, CHUNK)):
        yield _lines.encode_lines(bodies_out(chunk))


def csv_row(doc: dict[str, object]) -> list[object]:
    # body_to_dict's location is an object with latitude and longitude, or None.
    loc = cast("dict[str, object]", doc.pop("location") or {})
    doc["latitude"] = loc.get("latitude")
    doc["longitude"] = loc.get("longitude")
    return [neutralize(doc[f]) for f in CSV_FIELDS]


def csv_chunks(bodies: Iterable[bytes]) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    it = iter(bodies)
    while chunk := list(islice(it, CHUNK)):
        writer.writerows(csv_row(d) for d in msgspec.to_builtins(bodies_out(chunk)))
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


def export_response(bodies: Iterator[bytes], fmt: str, send_timeout: float = 0,
                    slots: StreamSlots | None = None) -> Response:
    """Stream the export; past ``send_timeout`` seconds (a slow reader) the stream is cut.

    With ``slots``, the response holds one of them until the server closes it.
    """
    release = slots.take() if slots is not None else None
    sock = request.environ.get("gunicorn.socket")
    if fmt == "parquet":
        response = Response(
            stream_with_context(send_within(parquet_chunks(bodies), send_timeout, sock,
                                            release)),
            mimetype="application/vnd.apache.parquet",
            headers={"Content-Disposition": "attachment; filename=activities.parquet"})
    elif fmt == "csv":
        response = Response(
            stream_with_context(send_within(csv_chunks(bodies), send_timeout, sock, release)),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment; filename=activities.csv"})
    else:
        response = Response(
            stream_with_context(send_within(ndjson_chunks(bodies), send_timeout, sock, release)),
            mimetype="application/x-ndjson")
    if release is not None:
        response.call_on_close(release)
    return response
