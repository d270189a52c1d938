"""The extraction loop: take a batch, write it to disk atomically, then acknowledge it.

Delivery is at-least-once: a batch whose ack was lost (a crash, a timeout) comes back
after the visibility timeout. Written files are the ledger: every line carries its
``feed_id``, the set of written-but-unacknowledged ids is rebuilt at start from the files
a journal names (``Ledger``), and an item already written is skipped (but still
acknowledged), so each log lands on disk once.
A batch file is written to a temporary name, fsynced and renamed: a reader (or the
ledger scan) never sees half a batch.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
from prometheus_client import Counter

from watchlog.clients.http import Client, error_message
from watchlog.core.errors import ExtractError, GaveUp
from watchlog.core.metrics import client_registry

log = logging.getLogger(__name__)
REGISTRY = client_registry("extractor")
WRITTEN = Counter("watchlog_extractor_written", "Logs written to disk", registry=REGISTRY)
BATCHES = Counter("watchlog_extractor_batches", "Non-empty batches taken", registry=REGISTRY)
ERRORS = Counter("watchlog_extractor_errors", "Failed calls to the consumer API",
                 registry=REGISTRY)
TMP_SUFFIX = ".tmp"


class _Line(msgspec.Struct):
    feed_id: str


_line = msgspec.json.Decoder(_Line)
_encode = msgspec.json.encode


@dataclass
class Stats:
    batches: int = 0
    written: int = 0
    skipped_duplicates: int = 0
    acknowledged: int = 0
    dropped: int = 0  # batches dropped on purpose (--drop-rate), delivered again later

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Ledger:
    """The feed ids on disk that the server may still deliver again.

    A batch is acknowledged right after it is written, and acknowledged entries never come
    back, so only written-but-unacknowledged files matter. They are not always the newest:
    a run can stop between write and acknowledgement, and a later run drain newer entries
    before the old ones come back (after their visibility timeout). So the ledger keeps a
    journal, ``JOURNAL`` in the output directory: a file's name is added (and fsynced)
    before the file is written, and removed once every id in it was acknowledged. At start
    the ledger reads the files the journal names, and the newest ``RECENT_FILES`` (output
    written before the journal existed). It forgets ids once acknowledged, so it stays small
    however long ``--follow`` runs.
    """

    RECENT_FILES = 64
    JOURNAL = ".unacknowledged"
    PATTERN = "*.ndjson"  # the batch files (watchlog.clients.dataset: "*.parquet")

    def __init__(self, root: Path, journal: bool = True) -> None:
        self.root = root
        self.ids: set[str] = set()
        self.journal = root / self.JOURNAL if journal else None
        # file (relative to root) -> its ids not yet acknowledged
        self.unacked: dict[str, set[str]] = {}
        for stale in root.rglob("*" + TMP_SUFFIX):
            stale.unlink()  # a batch a crash left half-written: it was never acknowledged
        named = set()
        if self.journal is not None and self.journal.exists():
            named = {line for line in self.journal.read_text().splitlines() if line}
        files = sorted(root.rglob(self.PATTERN), key=lambda f: f.stat().st_mtime)
        for path in {*files[-self.RECENT_FILES:], *(root / n for n in named)}:
            if path.exists():
                ids = self._read(path)
                self.ids |= ids
                if str(path.relative_to(root)) in named:
                    self.unacked[str(path.relative_to(root))] = ids
        self._save()
        log.info("ledger: %d logs already in %s", len(self.ids), root)

    def _read(self, path: Path) -> set[str]:
        """The feed ids in one written file."""
        ids = set()
        with path.open("rb") as f:
            for n, line in enumerate(f, 1):
                try:
                    ids.add(_line.decode(line).feed_id)
                except msgspec.DecodeError:
                    log.warning("%s:%d: not a batch line, ignored", path, n)
        return ids

    def __contains__(self, feed_id: str) -> bool:
        return feed_id in self.ids

    def writing(self, files: dict[Path, list[str]]) -> None:
        """Name a batch's files in the journal (durably, once) before they are written."""
        for path, ids in files.items():
            self.unacked.setdefault(str(path.relative_to(self.root)), set()).update(ids)
        self._save()

    def written(self, ids: list[str]) -> None:
        self.ids.update(ids)

    def acknowledged(self, ids: list[str]) -> None:
        """Forget acknowledged ids; drop from the journal the files now wholly acknowledged."""
        done = set(ids)
        self.ids.difference_update(done)
        settled = [name for name, left in self.unacked.items() if not left - done]
        for left in self.unacked.values():
            left -= done
        for name in settled:
            del self.unacked[name]
        if settled:
            self._save()

    def _save(self) -> None:
        if self.journal is not None:
            write_atomically(self.journal, "".join(f"{n}\n" for n in sorted(self.unacked))
                             .encode())


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + TMP_SUFFIX)
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # make the rename itself durable
    finally:
        os.close(fd)


class Extractor:
    """Drain (or follow) one named extractor of the consumer API into a directory."""

    ledger_class: type[Ledger] = Ledger

    def __init__(self, client: Client, name: str, root: Path, max_items: int = 500,
                 visibility: int | None = None, consumer: str = "default",
                 drop_rate: float = 0.0, random_seed: int | None = None) -> None:
        self.client, self.name, self.root = client, name, root
        # The seed's client dropped a share of its own calls; here a dropped batch is
        # neither written nor acknowledged, so the server delivers it again after the
        # visibility timeout: nothing is lost, and the ledger keeps it from being doubled.
        self.drop_rate, self.rng = drop_rate, random.Random(random_seed)
        self.params: dict[str, int | str] = {"max": max_items, "consumer": consumer}
        if visibility is not None:
            self.params["visibility_timeout"] = visibility
        root.mkdir(parents=True, exist_ok=True)
        self.ledger = self.ledger_class(root)
        self.stats = Stats()
        self.ready = False  # the extractor is known to exist on the server

    def ensure(self) -> bool:
        """Create the extractor if it does not exist yet; return True when it was created.

        ``PUT`` creates; 409 means it exists (reused as it stands: its position is kept) or
        the server holds its most extractors (WATCHLOG_MAX_EXTRACTORS), told apart by a GET.
        """
        path = f"/v1/extractors/{self.name}"
        resp = self._call(path, "PUT", accept=(409,), json={"start": "earliest"})
        created = resp.status_code != 409
        if not created and self._call(path, "GET", accept=(404,)).status_code != 200:
            ERRORS.inc()
            raise ExtractError(f"PUT {path}: {error_message(resp)}", transient=False)
        self.ready = True
        return created

    def fetch(self) -> list[dict[str, Any]]:
        """Take the next batch (redeliveries first); the first call creates the extractor."""
        if not self.ready:
            self.ensure()
        doc = self._call(f"/v1/extractors/{self.name}/batches", params=self.params).json()
        items: list[dict[str, Any]] = doc["items"]
        return items

    def write(self, items: list[dict[str, Any]]) -> int:
        """Write the items not yet on disk as one batch file; return how many."""
        new = [it for it in items if it["feed_id"] not in self.ledger]
        self.stats.skipped_duplicates += len(items) - len(new)
        if new:
            day = datetime.now(UTC).strftime("%Y-%m-%d")
            path = self.root / day / f"batch-{new[0]['feed_id']}-{len(new)}.ndjson"
            ids = [it["feed_id"] for it in new]
            self.ledger.writing({path: ids})
            write_atomically(path, b"".join(_encode(it) + b"\n" for it in new))
            self.ledger.written(ids)
            self.stats.written += len(new)
            WRITTEN.inc(len(new))
        return len(new)

    def ack(self, items: list[dict[str, Any]]) -> int:
        """Acknowledge every item of a batch, written now or before."""
        ids = [it["feed_id"] for it in items]
        doc = self._call(f"/v1/extractors/{self.name}/ack", json={"ids": ids}).json()
        self.ledger.acknowledged(ids)  # acknowledged: never delivered again
        acknowledged: int = doc["acknowledged"]
        self.stats.acknowledged += acknowledged
        return acknowledged

    def step(self) -> int:
        """Take, write and acknowledge one batch; return its size (0: nothing new)."""
        items = self.fetch()
        if items and self.drop_rate and self.rng.random() < self.drop_rate:
            self.stats.dropped += 1
            return len(items)
        if items:
            self.stats.batches += 1
            BATCHES.inc()
            self.write(items)
            self.ack(items)
        return len(items)

    def run(self, follow: bool = False, interval: float = 15.0,
            stop: threading.Event | None = None) -> Stats:
        """Drain until a batch comes back empty; with ``follow``, poll every ``interval``."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                got = self.step()
            except ExtractError as e:
                if stop.is_set():
                    break  # stopped in a retry wait; an unacknowledged batch comes back later
                if not (follow and e.transient):
                    raise
                log.warning("%s; trying again in %.0f s", e, interval)
                got = 0
            if not got:
                if not follow:
                    break
                stop.wait(interval)
        return self.stats

    def _call(self, path: str, method: str = "POST", accept: tuple[int, ...] = (),
              **kwargs: Any) -> httpx.Response:
        """Make one retried call; an error status not in ``accept`` is an ExtractError."""
        try:
            resp = self.client.request(method, path, **kwargs)
        except GaveUp as e:
            ERRORS.inc()
            raise ExtractError(str(e), transient=True) from None
        if resp.status_code >= 400 and resp.status_code not in accept:
            ERRORS.inc()
            raise ExtractError(f"{method} {path}: {error_message(resp)}", transient=False)
        return resp
