"""Extraction to a Parquet dataset: ``DIR/date=YYYY-MM-DD/part-<first feed id>.parquet``.

The same loop and guarantees as the NDJSON extractor (``clients/extractor.py``): a batch is
written, then acknowledged. Its logs are grouped by the UTC day of their event time (Hive
partitions that pandas, DuckDB and Spark read as a ``date`` column); each group becomes one
file, written under a hidden temporary name, fsynced, renamed, and its directory fsynced,
before the batch is acknowledged: a reader never sees half a file. Each row carries its
``feed_id``; the ledger (``clients.extractor.Ledger``: a journal of the files not yet
wholly acknowledged) reads them back at start, so a batch delivered again after a crash
between write and acknowledgement, however many newer batches were written meanwhile, is
acknowledged but not written twice.

``--compact`` merges a complete day's files (the day is over and the feed drained) into
one, swapped in atomically: the merged file is built in a staging directory beside DIR,
then the staging directory and the day's directory trade places in one ``renameat2``
(``RENAME_EXCHANGE``), so a reader sees either the small files or the merged one, never
both and never neither. Staging left by a crash is deleted at the next start; either way
(before or after the swap) it holds nothing the dataset needs.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from watchlog.api.consumer.parquet import DATASET_SCHEMA, table_from_docs, writer
from watchlog.clients.extractor import TMP_SUFFIX, WRITTEN, Extractor, Ledger, Stats

log = logging.getLogger(__name__)
PART_GLOB = "part-*.parquet"


class ParquetLedger(Ledger):
    """The ledger of a dataset: the ``feed_id`` column of the files the journal names."""

    PATTERN = "*.parquet"

    def _read(self, path: Path) -> set[str]:
        try:
            return set(pq.read_table(path, columns=["feed_id"]).column("feed_id").to_pylist())
        except (OSError, pa.ArrowInvalid) as e:
            log.warning("%s: not a readable Parquet file, ignored (%s)", path, e)
            return set()


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's entry to disk (after a write or a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_parquet(target: Path, table: pa.Table) -> None:
    w = writer(str(target), table.schema)
    try:
        w.write_table(table)
    finally:
        w.close()


def write_table_atomically(path: Path, table: pa.Table, atomic: bool = True) -> None:
    """Write ``table`` to ``path`` via a hidden temporary file, fsync, rename, fsync the dir.

    ``atomic=False`` writes in place: the negative control of the tests (a crash mid-write
    then leaves a torn file where readers look).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name("." + path.name + TMP_SUFFIX) if atomic else path
    _write_parquet(target, table)
    fsync_path(target)
    if atomic:
        os.replace(target, path)
    fsync_path(path.parent)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> None:
    """Swap two directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``)."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        raise OSError("renameat2 is not available (Linux with glibc >= 2.28 needed)")
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"swap {a} and {b}: {os.strerror(err)}")


def staging_dir(root: Path, day_dir: Path) -> Path:
    """Beside the dataset, not in it: readers' globs (DIR/**) never see it."""
    return root.parent / f".{root.name}.compact-{day_dir.name}"


@dataclass
class DatasetStats(Stats):
    compacted_days: int = 0


class DatasetExtractor(Extractor):
    """The extractor writing a day-partitioned Parquet dataset."""

    ledger_class = ParquetLedger
    stats: DatasetStats

    def __init__(self, *args: Any, compact: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats = DatasetStats()
        self.compact = compact
        for stale in self.root.parent.glob(f".{self.root.name}.compact-*"):
            shutil.rmtree(stale)  # a compaction a crash stopped: before or after its swap,
            # it holds nothing the dataset needs (docstring)

    def write(self, items: list[dict[str, Any]]) -> int:
        """Write the items not yet on disk, one file per event day; return how many."""
        new = [it for it in items if it["feed_id"] not in self.ledger]
        self.stats.skipped_duplicates += len(items) - len(new)
        by_day: dict[str, list[dict[str, Any]]] = {}
        for it in new:
            by_day.setdefault(it["timestamp"][:10], []).append(it)
        files = {self.root / f"date={day}" / f"part-{docs[0]['feed_id']}.parquet": docs
                 for day, docs in sorted(by_day.items())}
        self.ledger.writing({path: [d["feed_id"] for d in docs] for path, docs in files.items()})
        for path, docs in files.items():
            write_table_atomically(path, table_from_docs(docs, with_feed_id=True))
            self.ledger.written([d["feed_id"] for d in docs])
        self.stats.written += len(new)
        WRITTEN.inc(len(new))
        return len(new)

    def step(self) -> int:
        got = super().step()
        if not got and self.compact:
            self.compact_days()
        return got

    def compact_days(self, today: str | None = None) -> int:
        """Merge every complete day (before today, UTC) that has more than one file."""
        today = today or datetime.now(UTC).strftime("%Y-%m-%d")
        done = 0
        for day_dir in sorted(self.root.glob("date=*")):
            if day_dir.name[5:] < today and len(list(day_dir.glob(PART_GLOB))) > 1:
                try:
                    compact_day(self.root, day_dir)
                except OSError as e:
                    log.warning("%s: not compacted (%s)", day_dir, e)
                    continue
                done += 1
        self.stats.compacted_days += done
        return done


def compact_day(root: Path, day_dir: Path) -> Path:
    """Merge a day's files into one and swap it in atomically; return the merged file."""
    files = sorted(day_dir.glob(PART_GLOB))
    staging = staging_dir(root, day_dir)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    merged = staging / files[0].name
    w = writer(str(merged), DATASET_SCHEMA)
    try:
        for f in files:  # a row group at a time: memory stays bounded whatever the day
            pf = pq.ParquetFile(f)
            for i in range(pf.num_row_groups):
                w.write_table(pf.read_row_group(i).cast(DATASET_SCHEMA))
    finally:
        w.close()
    fsync_path(merged)
    fsync_path(staging)
    exchange(day_dir, staging)
    fsync_path(root)
    fsync_path(root.parent)
    shutil.rmtree(staging)  # now the old small files
    log.info("%s: %d files merged into %s", day_dir, len(files), merged.name)
    return day_dir / merged.name
