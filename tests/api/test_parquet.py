"""Parquet: the export and the extracted dataset, read back as analysts do (pyarrow, DuckDB).

Real cluster, real APIs. Every check has a contrast that shows it can fail: a changed cell
is caught by the row comparison, an unknown format against a known one, an export without
``--force`` against one with it, the ledger and the atomic rename turned off.
"""

from __future__ import annotations

import functools
import io
import json
import random
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import WATCHLOG, post_all, process_env, random_logs, run, set_faults, wait_for
from watchlog.api.consumer import parquet
from watchlog.clients import dataset
from watchlog.clients.dataset import DatasetExtractor, ParquetLedger
from watchlog.clients.http import Client, token_for
from watchlog.core import keys
from watchlog.core.schema import iso_ms

DAY_MS = 86_400_000


def day_start(days_ago: int) -> int:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today - timedelta(days=days_ago)).timestamp() * 1000)


def two_days_of_logs(n: int, seed: int, users: int = 40,
                     partition_zero: bool | None = None) -> list[dict[str, Any]]:
    """``n`` logs over yesterday and today, some without location or heart rate.

    ``partition_zero``: only users of partition 0 (True), or none of them (False).
    """
    rng = random.Random(seed)
    now = int(time.time() * 1000) - 60_000
    docs = (random_logs(n // 2, users, rng, span_ms=DAY_MS - 1, end_ms=day_start(0) - 1)
            + random_logs(n - n // 2, users, rng, span_ms=now - day_start(0), end_ms=now))
    for i, d in enumerate(docs):
        d["event_id"] = f"pq{seed}-{i}"
        if i % 7 == 0:
            del d["location"]
        if i % 11 == 0:
            d["calories_burned"] = 12  # a whole number: the JSON says 12, Parquet 12.0
    if partition_zero is not None:
        zero = [u for u in range(10_000) if keys.partition_of(str(u)) == 0]
        other = [u for u in range(10_000) if keys.partition_of(str(u)) != 0]
        for d in docs:
            d["user_id"] = rng.choice(zero if partition_zero else other)
    return docs


def as_json_row(doc: dict[str, Any]) -> dict[str, Any]:
    """The API's log as a flat row of Python values (what a Parquet row must equal)."""
    loc = doc.get("location") or {}
    return {"event_id": doc["event_id"], "user_id": str(doc["user_id"]),
            "activity_type": doc["activity_type"],
            "timestamp": datetime.fromisoformat(doc["timestamp"]),
            "duration": doc["duration"], "distance": float(doc["distance"]),
            "heart_rate": doc["heart_rate"], "calories_burned": float(doc["calories_burned"]),
            "latitude": loc.get("latitude"), "longitude": loc.get("longitude"),
            "device_id": doc["device_id"], "activity_status": doc["activity_status"]}


def differences(rows: list[dict[str, Any]], api: list[dict[str, Any]]) -> list[str]:
    """Every (event_id, field) whose Parquet value is not the API's; rows in the same order."""
    if len(rows) != len(api):
        return [f"{len(rows)} rows against {len(api)}"]
    out = []
    for row, doc in zip(rows, api, strict=True):
        want = as_json_row(doc)
        for name, value in want.items():
            got = row.get(name)
            if isinstance(got, datetime):
                got = got.astimezone(UTC)
            if got != value or type(got) is not type(value):
                out.append(f"{doc['event_id']}.{name}: {got!r} != {value!r}")
    return out


def by_time(doc: dict[str, Any]) -> tuple[datetime, str]:
    return datetime.fromisoformat(doc["timestamp"]), doc["event_id"]


def export(consumer: Any, headers: dict[str, str], fmt: str, **params: Any) -> Any:
    query = "&".join(f"{k}={v}" for k, v in {**params, "format": fmt}.items())
    r = consumer.get(f"/v1/activities/export?{query}", headers=headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r


def duck_rows(source: str, order: str = "timestamp, event_id") -> list[dict[str, Any]]:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        rel = con.sql(f"SELECT * FROM {source} ORDER BY {order}")
        return [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
    finally:
        con.close()


def test_parquet_schema_comes_from_the_api_schema() -> None:
    """One definition: the API's fields, in its order, location as two columns; typed."""
    from watchlog.core.schema import ActivityOut

    api = [f for f in ActivityOut.__struct_fields__ if f != "location"]
    names = parquet.SCHEMA.names
    assert [n for n in names if n not in ("latitude", "longitude")] == api
    assert names.index("latitude") == ActivityOut.__struct_fields__.index("location")
    s = parquet.SCHEMA
    assert s.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    for enum in ("activity_type", "activity_status"):
        assert pa.types.is_dictionary(s.field(enum).type)
    assert (s.field("duration").type, s.field("heart_rate").type) == (pa.int32(), pa.int16())
    for name in ("distance", "calories_burned", "latitude", "longitude"):
        assert s.field(name).type == pa.float64()
    units = {f.name: (f.metadata or {}).get(b"unit") for f in s}
    assert units["duration"] == b"seconds" and units["distance"] == b"km"
    assert units["heart_rate"] == b"bpm" and units["calories_burned"] == b"kcal"
    assert units["latitude"] == b"degrees"
    nullable = {f.name for f in s if f.nullable}
    assert nullable == {"heart_rate", "latitude", "longitude"}
    assert s.metadata[parquet.VERSION_KEY] == parquet.SCHEMA_VERSION.encode()


def test_parquet_export_equals_the_json_export_field_by_field(
        producer: Any, consumer: Any, ingest_headers: dict[str, str],
        reader_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    docs = two_days_of_logs(900, seed=1)
    post_all(producer, ingest_headers, docs)
    monkeypatch.setattr(parquet, "ROW_GROUP", 200)  # several row groups, as the merge goes
    rng = {"from": day_start(1), "to": day_start(-1) - 1}
    api = [json.loads(line) for line in
           export(consumer, reader_headers, "ndjson", **rng).get_data().splitlines()]
    assert len(api) == 900
    r = export(consumer, reader_headers, "parquet", **rng)
    assert r.mimetype == "application/vnd.apache.parquet"
    f = pq.ParquetFile(io.BytesIO(r.get_data()))
    assert f.metadata.num_rows == 900 and f.metadata.num_row_groups == 5
    assert f.schema_arrow.metadata[parquet.VERSION_KEY] == parquet.SCHEMA_VERSION.encode()
    table = f.read()
    assert table.schema.equals(parquet.SCHEMA)  # the documented types
    assert str(table.schema.field("timestamp").type.tz) == "UTC"
    rows = table.to_pylist()
    assert len({r["event_id"] for r in rows}) == 900
    assert differences(rows, api) == []  # same order: event time, as the NDJSON export
    path = tmp_path / "logs.parquet"
    path.write_bytes(r.get_data())
    by_id = sorted(api, key=by_time)
    assert differences(duck_rows(f"read_parquet('{path}')"), by_id) == []
    # Control: the same comparison catches one changed cell, and a missing row.
    rows[17]["distance"] += 0.001
    assert len(differences(rows, api)) == 1
    assert differences(rows[1:], api) != []
    # The activity filter and the range apply as to NDJSON.
    ran = [d for d in api if d["activity_type"] == "running"]
    got = pq.read_table(io.BytesIO(export(consumer, reader_headers, "parquet",
                                          activity_type="running", **rng).get_data()))
    assert differences(got.to_pylist(), ran) == []


def test_parquet_export_of_nothing_is_a_valid_empty_file(consumer: Any,
                                                         reader_headers: dict[str, str]
                                                         ) -> None:
    r = export(consumer, reader_headers, "parquet", **{"from": day_start(3),
                                                       "to": day_start(2)})
    table = pq.read_table(io.BytesIO(r.get_data()))
    assert table.num_rows == 0 and table.schema.equals(parquet.SCHEMA)


def test_export_unknown_format_is_400_naming_the_accepted_ones(consumer: Any,
                                                               reader_headers: dict[str, str]
                                                               ) -> None:
    r = consumer.get("/v1/activities/export?format=xlsx", headers=reader_headers)
    assert r.status_code == 400 and r.json["field"] == "format"
    assert all(f in r.json["message"] for f in ("ndjson", "csv", "parquet"))
    assert r.json["accepted"] == ["ndjson", "csv", "parquet"]
    # Control: the accepted ones answer 200.
    for fmt in ("ndjson", "csv", "parquet"):
        r = consumer.get(f"/v1/activities/export?format={fmt}", headers=reader_headers)
        assert r.status_code == 200, fmt
        r.get_data()  # read to the end: the stream gives back its slot


def test_parquet_export_over_the_range_limit_is_the_same_error(consumer: Any,
                                                               reader_headers: dict[str, str]
                                                               ) -> None:
    wide = f"from={day_start(40)}&to={day_start(0)}"
    answers = [consumer.get(f"/v1/activities/export?{wide}&format={fmt}",
                            headers=reader_headers) for fmt in ("ndjson", "csv", "parquet")]
    assert {a.status_code for a in answers} == {422}
    assert answers[2].json == answers[0].json == answers[1].json
    # Control: a range inside the limit is exported.
    ok = f"from={day_start(10)}&to={day_start(0)}&format=parquet"
    r = consumer.get(f"/v1/activities/export?{ok}", headers=reader_headers)
    assert r.status_code == 200 and pq.read_table(io.BytesIO(r.get_data())).num_rows == 0


def post_live(producer_url: str, headers: dict[str, str], docs: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=producer_url, headers=headers, timeout=30) as http:
        for i in range(0, len(docs), 500):
            r = http.post("/v1/activities", json=docs[i:i + 500])
            assert r.status_code == 200 and r.json()["rejected"] == 0, r.text


def test_cli_export_parquet_and_refuse_to_overwrite_without_force(
        env: dict[str, Any], producer_url: str, ingest_headers: dict[str, str],
        tmp_path: Path) -> None:
    post_live(producer_url, ingest_headers, two_days_of_logs(300, seed=2))
    out = tmp_path / "logs.parquet"
    frm = datetime.fromtimestamp(day_start(1) / 1000, UTC).date().isoformat()
    to = datetime.now(UTC).date().isoformat()
    args = ["export", "--from", frm, "--to", to, "--format", "parquet", "-o", str(out)]
    got = run(env, *args, "--json")
    assert got["rows"] == 300 == pq.read_metadata(out).num_rows
    before = out.read_bytes()
    refused = run(env, *args, code=1)
    assert "exists" in refused.output and "--force" in refused.output
    assert out.read_bytes() == before and not out.with_name(out.name + ".part").exists()
    # Control: with --force the same command writes the file again.
    out.write_bytes(b"not parquet")
    assert run(env, *args, "--force", "--json")["rows"] == 300
    assert pq.read_table(out).num_rows == 300


# -- extraction to a dataset ----------------------------------------------------------------

GLOB = "read_parquet('{}/**/*.parquet', hive_partitioning = true)"


def dataset_counts(out: Path) -> tuple[int, int]:
    """(rows, distinct event ids) of the dataset, as DuckDB reads it."""
    con = duckdb.connect()
    try:
        row = con.execute(f"SELECT count(*), count(DISTINCT event_id) FROM {GLOB.format(out)}"
                      ).fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0]), int(row[1])


def stored_logs(consumer_url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every stored log of yesterday and today, from the consumer API's NDJSON export."""
    r = httpx.get(consumer_url + "/v1/activities/export", headers=headers, timeout=60,
                  params={"from": day_start(1), "to": day_start(-1) - 1})
    assert r.status_code == 200
    return [json.loads(line) for line in r.text.splitlines()]


def drain_until_done(env: dict[str, Any], consumer_url: str, headers: dict[str, str],
                     name: str, out: Path, *extra: str) -> None:
    """Run the extractor until its lag and pending are 0 (faults may leave some pending)."""
    for _ in range(10):
        run(env, "extract", "--name", name, "--format", "parquet", "--out", str(out),
            "--visibility-timeout", "1", "--json", *extra)
        info = httpx.get(f"{consumer_url}/v1/extractors/{name}", headers=headers).json()
        if info["lag"] == 0 and info["pending"] == 0:
            return
        time.sleep(1.1)  # what a fault left pending comes back after the visibility timeout
    raise AssertionError(f"extractor {name} not drained: {info}")


def rows_on_disk(out: Path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in out.rglob("part-*.parquet"))


class NoLedger(ParquetLedger):
    """The negative control: forget what is on disk."""

    def __contains__(self, feed_id: str) -> bool:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("ledger", ["on", "off"])
def test_dataset_after_kill_9_between_write_and_ack_holds_every_log_once(
        ledger: str, env: dict[str, Any], producer_url: str, consumer_url: str,
        ingest_headers: dict[str, str], reader_headers: dict[str, str],
        admin_headers: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """kill -9 of `watchlog extract --format parquet` after a batch is on disk and before
    its ack; restart under injected faults; drain: DuckDB counts every stored log once."""
    post_live(producer_url, ingest_headers, two_days_of_logs(400, seed=3, partition_zero=False))
    out = tmp_path / "dataset"
    # Every ack fails before it is applied: the extractor writes its first batch, then
    # retries the ack until it is killed.
    set_faults(consumer_url, admin_headers, {
        "abort_p": 1.0, "abort_status": 503, "abort_phase": "before", "retry_after": 1,
        "routes": ["/v1/extractors/<name>/ack"]})
    proc = subprocess.Popen([WATCHLOG, "extract", "--name", "ds", "--format", "parquet",
                             "--out", str(out), "--max", "60", "--visibility-timeout", "1"],
                            env=process_env({k: v for k, v in env.items() if v}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for("the first batch on disk", lambda: rows_on_disk(out) == 60, 30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        set_faults(consumer_url, admin_headers, None)
    written = dataset_counts(out)
    assert written[0] == written[1] == 60
    info = httpx.get(consumer_url + "/v1/extractors/ds", headers=reader_headers).json()
    assert info["pending"] == 60  # written, never acknowledged: due again
    # New logs of partition 0 come first in the next batch (its items are in partition
    # order): the redelivered rows would land in new files, not over the old ones.
    post_live(producer_url, ingest_headers, two_days_of_logs(40, seed=4, partition_zero=True))
    if ledger == "off":
        monkeypatch.setattr(DatasetExtractor, "ledger_class", NoLedger)
    set_faults(consumer_url, admin_headers, {  # refused calls: retried, nothing lost
        "abort_p": 0.3, "abort_status": 503, "abort_phase": "before", "retry_after": 0,
        "routes": ["/v1/extractors/<name>/batches", "/v1/extractors/<name>/ack"]})
    try:
        drain_until_done(env, consumer_url, reader_headers, "ds", out)
    finally:
        set_faults(consumer_url, admin_headers, None)
    rows, distinct = dataset_counts(out)
    stored = stored_logs(consumer_url, reader_headers)
    assert distinct == len(stored) == 440
    if ledger == "on":
        assert rows == distinct  # every stored log exactly once
        got = duck_rows(GLOB.format(out))
        want = sorted(stored, key=by_time)
        assert differences(got, want) == []
        days = {r["date"] for r in got}
        assert len(days) == 2 and all(str(r["timestamp"].date()) == str(r["date"])
                                      for r in got)
        assert not list(out.rglob("*.tmp"))
    else:
        assert rows >= distinct + 60  # the check catches the rewritten batch


class Crash(Exception):
    """The process dies here (raised from inside a file write)."""


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "in-place"])
def test_a_write_cut_midway_is_never_seen_by_readers(
        atomic: bool, env: dict[str, Any], producer_url: str, consumer_url: str,
        ingest_headers: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    post_live(producer_url, ingest_headers, two_days_of_logs(200, seed=5))
    out = tmp_path / "dataset"
    real = dataset._write_parquet
    calls = []

    def torn(target: Path, table: pa.Table) -> None:
        calls.append(target)
        if len(calls) == 3:  # the third file: half of it reaches the disk, then the crash
            real(target, table)
            data = target.read_bytes()
            target.write_bytes(data[: len(data) // 2])
            raise Crash(target)
        real(target, table)

    monkeypatch.setattr(dataset, "_write_parquet", torn)
    if not atomic:
        monkeypatch.setattr(dataset, "write_table_atomically",
                            functools.partial(dataset.write_table_atomically, atomic=False))
    with Client(consumer_url, token_for("reader", env)) as c:
        ex = DatasetExtractor(c, "cut", out, max_items=50, visibility=1)
        with pytest.raises(Crash):
            ex.run()
    if not atomic:  # the control: readers meet the torn file
        with pytest.raises(duckdb.Error):
            dataset_counts(out)
        return
    rows, distinct = dataset_counts(out)  # what was written before the crash, once
    assert rows == distinct >= 50
    monkeypatch.setattr(dataset, "_write_parquet", real)
    time.sleep(1.1)
    assert run(env, "extract", "--name", "cut", "--format", "parquet", "--out", str(out),
               "--visibility-timeout", "1", "--json")["acknowledged"] > 0
    assert dataset_counts(out) == (200, 200)
    assert not list(out.rglob("*.tmp"))


def test_compact_merges_a_complete_day_into_one_file_atomically(
        env: dict[str, Any], producer_url: str, ingest_headers: dict[str, str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    post_live(producer_url, ingest_headers, two_days_of_logs(300, seed=6))
    out = tmp_path / "dataset"
    yesterday = datetime.fromtimestamp(day_start(1) / 1000, UTC).date().isoformat()
    today = datetime.now(UTC).date().isoformat()
    # A crash at the swap: the merged file waits in the staging directory, beside the
    # dataset; readers still see the small files, each log once.
    monkeypatch.setattr(dataset, "exchange", lambda a, b: (_ for _ in ()).throw(Crash(a)))
    with pytest.raises(Crash):
        run(env, "extract", "--name", "cmp", "--format", "parquet", "--out", str(out),
            "--max", "40", "--compact")
    staged = list(tmp_path.glob(".dataset.compact-*"))
    assert len(staged) == 1 and dataset_counts(out) == (300, 300)
    # Control: staged inside the dataset, the same check counts the merged rows twice.
    inside = out / f"date={yesterday}" / ".compact"
    staged[0].rename(inside)
    assert dataset_counts(out)[0] > 300
    inside.rename(staged[0])
    monkeypatch.undo()
    got = run(env, "extract", "--name", "cmp", "--format", "parquet", "--out", str(out),
              "--compact", "--json")
    assert got["compacted_days"] == 1 and not list(tmp_path.glob(".dataset.compact-*"))
    assert len(list((out / f"date={yesterday}").glob("*.parquet"))) == 1
    assert len(list((out / f"date={today}").glob("*.parquet"))) > 1  # today is not over
    assert dataset_counts(out) == (300, 300)
    merged = next((out / f"date={yesterday}").glob("*.parquet"))
    assert pq.read_schema(merged).metadata[parquet.VERSION_KEY] == b"1"


def test_extract_compact_needs_parquet(env: dict[str, Any], tmp_path: Path) -> None:
    r = run(env, "extract", "--name", "x", "--out", str(tmp_path), "--compact", code=2)
    assert "--format parquet" in r.output


def test_iso_ms_and_parquet_timestamps_agree() -> None:
    """The export's timestamp cells are the API's instants, to the millisecond."""
    ms = [0, 1, 999, 1_764_547_200_123]
    table = pa.table({"t": pa.array(ms, parquet.SCHEMA.field("timestamp").type)})
    for m, v in zip(ms, table.column("t").to_pylist(), strict=True):
        assert v == datetime.fromisoformat(iso_ms(m))
