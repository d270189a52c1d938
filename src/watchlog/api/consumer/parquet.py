"""Logs as Parquet: the typed schema, and the export written a row group at a time.

The Arrow schema is derived from ``watchlog.core.schema`` (one definition, no second list of
fields): column names, order and nullability from ``ActivityOut`` (what the API returns),
types, bounds and units from ``Activity`` (what a watch sends). ``location`` becomes two
float columns, ``latitude`` and ``longitude`` (as in the CSV export); enums are
dictionary-encoded with their full list of values; ``timestamp`` is ``timestamp[ms, UTC]``;
``user_id``, an integer or a text as sent, is its text. The file carries
``watchlog.schema_version`` in its metadata. docs/formats.md describes every column.

The export streams: each row group goes to the response as soon as the k-way merge has
produced it, and the footer last (docs/formats.md says why streaming, not spooling).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from operator import attrgetter
from typing import Any, cast

import msgspec
import msgspec.inspect as mi
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from watchlog.core import schema

SCHEMA_VERSION = "1"
VERSION_KEY = b"watchlog.schema_version"
ROW_GROUP = 32_768  # rows per row group (docs/formats.md: memory against size)
COMPRESSION = "zstd"  # ~2x smaller than snappy for these columns (docs/formats.md)
_ENUMS = {frozenset(values): values for values in (schema.ACTIVITY_TYPES, schema.STATUSES)}


@dataclass(frozen=True)
class Column:
    """One column: its name, Arrow type, and where the API's log holds its value."""

    name: str
    type: pa.DataType
    nullable: bool
    path: tuple[str, ...]  # keys into the API's log (location.latitude: two)
    unit: str | None
    kind: str  # "enum", "time", "text_of", or "plain": how an API value becomes a cell
    values: tuple[str, ...] = ()  # an enum's values, in the order of their stored codes

    def field(self) -> pa.Field:
        meta = {"unit": self.unit} if self.unit else None
        return pa.field(self.name, self.type, self.nullable, metadata=meta)


def _unwrap(t: Any) -> tuple[Any, str | None, bool]:
    """Return (type without Metadata/None, its description, nullable)."""
    nullable, desc = False, None
    if isinstance(t, mi.UnionType) and any(isinstance(u, mi.NoneType) for u in t.types):
        nullable = True
        rest = [u for u in t.types if not isinstance(u, mi.NoneType)]
        t = rest[0] if len(rest) == 1 else mi.UnionType(tuple(rest))
    if isinstance(t, mi.Metadata):
        desc = (t.extra_json_schema or {}).get("description")
        t = t.type
    return t, desc, nullable


def _int_type(t: mi.IntType) -> pa.DataType:
    """The narrowest signed integer that holds the schema's bounds."""
    lo = t.ge if t.ge is not None else -(2**63)
    hi = t.le if t.le is not None else 2**63 - 1
    for bits, arrow in ((16, pa.int16()), (32, pa.int32())):
        if -(2 ** (bits - 1)) <= lo and hi < 2 ** (bits - 1):
            return arrow
    return pa.int64()


def _columns_of(name: str, t: Any, nullable: bool, path: tuple[str, ...]) -> list[Column]:
    t, desc, _ = _unwrap(t)  # nullable or not as the API returns it (ActivityOut)
    if isinstance(t, mi.StructType):  # location: one column per field, nullable with it
        return [c for f in t.fields for c in _columns_of(f.name, f.type, nullable,
                                                         (*path, f.name))]
    if isinstance(t, mi.LiteralType):
        values = _ENUMS[frozenset(map(str, t.values))]
        return [Column(name, pa.dictionary(pa.int8(), pa.string()), nullable, path, None,
                       "enum", values)]
    if isinstance(t, mi.DateTimeType):
        return [Column(name, pa.timestamp("ms", tz="UTC"), nullable, path, "UTC", "time")]
    if isinstance(t, mi.IntType):
        return [Column(name, _int_type(t), nullable, path, desc, "plain")]
    if isinstance(t, mi.FloatType):
        return [Column(name, pa.float64(), nullable, path, desc, "plain")]
    if isinstance(t, mi.StrType):
        return [Column(name, pa.string(), nullable, path, None, "plain")]
    if isinstance(t, mi.UnionType):  # user_id: an integer or a text, as sent
        return [Column(name, pa.string(), nullable, path, None, "text_of")]
    raise TypeError(f"{name}: no Parquet type for {t!r}")


def derive_columns() -> list[Column]:
    """Every column, from the API's log (names, order, nullability) and the input types."""
    # type_info of a Struct is a StructType (the union it is typed with has no .fields)
    activity = cast(mi.StructType, mi.type_info(schema.Activity))
    given = {f.name: f.type for f in activity.fields}
    out: list[Column] = []
    for f in cast(mi.StructType, mi.type_info(schema.ActivityOut)).fields:
        _, _, nullable = _unwrap(f.type)
        out += _columns_of(f.name, given[f.name], nullable, (f.name,))
    return out


COLUMNS = derive_columns()
METADATA = {VERSION_KEY: SCHEMA_VERSION.encode(), b"watchlog.docs": b"docs/formats.md"}
SCHEMA = pa.schema([c.field() for c in COLUMNS], metadata=METADATA)
FEED_ID = pa.field("feed_id", pa.string(), nullable=False)
DATASET_SCHEMA = SCHEMA.append(FEED_ID).with_metadata(METADATA)
_DICTS = {c.name: pa.array(c.values, pa.string()) for c in COLUMNS if c.kind == "enum"}


# -- from stored bodies (the export: no API dicts on the way) -------------------------------

def _scaled(divisor: float) -> Callable[[Sequence[Any]], pa.Array]:
    return lambda v: pc.divide(pa.array(v, pa.float64()), divisor)


def _enum(name: str) -> Callable[[Sequence[Any]], pa.Array]:
    return lambda v: pa.DictionaryArray.from_arrays(pa.array(v, pa.int8()), _DICTS[name])


def _typed(name: str) -> Callable[[Sequence[Any]], pa.Array]:
    t = SCHEMA.field(name).type
    return lambda v: pa.array(v, t)


# Column name -> (position in the stored body, schema.BODY_FIELDS, and its conversion): the
# same arithmetic as schema.bodies_out (m -> km, 0.1 kcal -> kcal, codes -> names).
_B = {name: i for i, name in enumerate(schema.BODY_FIELDS)}
FROM_BODY: dict[str, tuple[int, Callable[[Sequence[Any]], pa.Array]]] = {
    "event_id": (_B["event_id"], _typed("event_id")),
    "user_id": (_B["user_id"], lambda v: pa.array(list(map(str, v)), pa.string())),
    "activity_type": (_B["type"], _enum("activity_type")),
    "timestamp": (_B["ts"], _typed("timestamp")),
    "duration": (_B["duration"], _typed("duration")),
    "distance": (_B["meters"], _scaled(1000.0)),
    "heart_rate": (_B["heart_rate"], _typed("heart_rate")),
    "calories_burned": (_B["decikcal"], _scaled(10.0)),
    "latitude": (_B["lat"], _typed("latitude")),
    "longitude": (_B["lon"], _typed("longitude")),
    "device_id": (_B["device_id"], _typed("device_id")),
    "activity_status": (_B["status"], _enum("activity_status")),
}
if [c.name for c in COLUMNS] != list(FROM_BODY):  # a field added to the API's log
    raise TypeError(f"core/schema.py has columns {[c.name for c in COLUMNS]}: FROM_BODY "
                    "needs a conversion for each")

# The stored body decoded positionally into untracked structs (gc=False): ~5x faster than
# lists of lists here, where the garbage collector kept walking 65k new containers.
_stored = msgspec.json.Decoder(list[schema._Stored])
_GET = [attrgetter(name) for name in schema._Stored.__struct_fields__]  # BODY_FIELDS order


def table_from_bodies(bodies: list[bytes]) -> pa.Table:
    """Turn stored bodies into a table of ``SCHEMA``: one C-level decode, then per column."""
    rows = _stored.decode(b"[" + b",".join(bodies) + b"]") if bodies else []
    return pa.Table.from_arrays([conv(list(map(_GET[i], rows)))
                                 for i, conv in FROM_BODY.values()], schema=SCHEMA)


# -- from the API's logs (the extractor writes what the API delivered) ----------------------

def _cell(c: Column, doc: dict[str, Any]) -> Any:
    v: Any = doc
    for key in c.path:
        v = v.get(key) if v is not None else None
    if v is None:
        return None
    if c.kind == "enum":
        return c.values.index(v)
    if c.kind == "time":
        return datetime.fromisoformat(v)
    if c.kind == "text_of":
        return str(v)
    return v


def table_from_docs(docs: Sequence[dict[str, Any]], with_feed_id: bool = False) -> pa.Table:
    """Turn the API's logs (dicts) into a table of ``SCHEMA`` (+ ``feed_id``)."""
    arrays = []
    for c in COLUMNS:
        cells = [_cell(c, d) for d in docs]
        if c.kind == "enum":
            arrays.append(pa.DictionaryArray.from_arrays(pa.array(cells, pa.int8()),
                                                         _DICTS[c.name]))
        else:
            arrays.append(pa.array(cells, c.type))
    if not with_feed_id:
        return pa.Table.from_arrays(arrays, schema=SCHEMA)
    arrays.append(pa.array([d["feed_id"] for d in docs], pa.string()))
    return pa.Table.from_arrays(arrays, schema=DATASET_SCHEMA)


# -- writing --------------------------------------------------------------------------------

def writer(sink: Any, table_schema: pa.Schema = SCHEMA) -> pq.ParquetWriter:
    """A Parquet writer with the project's settings (zstd, statistics, dictionary pages)."""
    return pq.ParquetWriter(sink, table_schema, compression=COMPRESSION,
                            use_byte_stream_split=["latitude", "longitude"],
                            column_encoding={"timestamp": "DELTA_BINARY_PACKED"},
                            use_dictionary=[c.name for c in COLUMNS
                                            if c.name not in ("timestamp", "latitude",
                                                              "longitude", "event_id")],
                            write_statistics=True)


class _Sink:
    """A write-only file whose bytes the response takes after each row group."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0
        self.closed = False

    def write(self, data: Any) -> int:
        b = bytes(data)
        self.parts.append(b)
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def parquet_chunks(bodies: Iterable[bytes], row_group: int | None = None) -> Iterator[bytes]:
    """Yield a Parquet file's bytes: a row group as the merge produces it, the footer last.

    Memory holds one row group (and the merge's chunks), whatever the range.
    """
    row_group = row_group or ROW_GROUP
    sink = _Sink()
    # Buffered natively: the writer's many small writes (page headers, pages) reach Python
    # once per MB, not one call each.
    out = pa.BufferedOutputStream(pa.PythonFile(sink, mode="w"), buffer_size=1 << 20)
    w = writer(out)
    it = iter(bodies)
    try:
        while group := list(islice(it, row_group)):
            w.write_table(table_from_bodies(group), row_group_size=row_group)
            out.flush()
            yield sink.take()
    finally:
        w.close()  # writes the footer (into the buffer: the stream is not the writer's)
        if not out.closed:
            out.close()  # flushes the footer into the sink
    yield sink.take()


def write_file(bodies: Iterable[bytes], path: Any, row_group: int | None = None) -> int:
    """Write the export into a file (the spooling alternative the bench measures)."""
    n = 0
    with open(path, "wb") as f:
        for chunk in parquet_chunks(bodies, row_group):
            f.write(chunk)
            n += len(chunk)
    return n


def rows_in(path: Any) -> int:
    """Return the rows of a Parquet file; a torn one (no footer) is an error."""
    try:
        return int(pq.read_metadata(path).num_rows)
    except (OSError, pa.ArrowInvalid) as e:
        raise ValueError(f"{path}: not a whole Parquet file ({e})") from None
