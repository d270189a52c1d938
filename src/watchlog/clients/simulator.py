"""``watchlog simulate``: the seed's producer client, made real.

A paced dispatcher (the main thread) generates logs from a ``Fleet`` and queues requests;
``--concurrency`` sender threads post them through the retrying client. A call a watch
drops (``--drop-rate``) is made again a moment later with the same event ids, so nothing
is lost and the server's idempotency turns a resend into a ``duplicate``. Stopping
(count, duration, Ctrl-C, SIGTERM) first delivers what is held; a second signal aborts.
"""

from __future__ import annotations

import gzip
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

import httpx
import msgspec
from prometheus_client import Counter

from watchlog.clients.dispatch import Deferred, Dispatcher, Plan, Unit
from watchlog.clients.fleet import Fleet
from watchlog.clients.http import Client, error_message
from watchlog.core.errors import GaveUp
from watchlog.core.metrics import client_registry
from watchlog.core.process import stop_on_signals

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

log = logging.getLogger(__name__)
REGISTRY = client_registry("simulator")  # our own: never clashes with the apps' metrics


def _counter(name: str, doc: str) -> Counter:
    return Counter(f"watchlog_simulator_{name}", doc, registry=REGISTRY)


SENT = _counter("sent", "Logs sent (each once, however many attempts)")
ACKED = _counter("acknowledged", "Logs the producer confirmed stored (created or duplicate)")
FAILED = _counter("failed", "Logs given up on after every retry")
RETRIED = _counter("retried", "Requests made again (HTTP retries and dropped calls)")
DUPLICATE = _counter("duplicate", "Logs the producer already had")
_encode = msgspec.json.encode


@dataclass
class Tally:
    """What became of the logs, kept in step with the Prometheus counters."""

    sent: int = 0
    created: int = 0
    duplicate: int = 0
    rejected: int = 0
    failed: int = 0
    retried: int = 0
    fatal: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, created: int = 0, duplicate: int = 0, rejected: int = 0,
            failed: int = 0) -> None:
        n = created + duplicate + rejected + failed
        with self.lock:
            self.sent += n
            self.created += created
            self.duplicate += duplicate
            self.rejected += rejected
            self.failed += failed
        SENT.inc(n)
        ACKED.inc(created + duplicate)
        DUPLICATE.inc(duplicate)
        FAILED.inc(failed)

    def retry(self) -> None:
        with self.lock:
            self.retried += 1
        RETRIED.inc()

    @property
    def acknowledged(self) -> int:
        return self.created + self.duplicate

    def summary(self, ack_log: str | None) -> dict[str, Any]:
        return {"sent": self.sent, "created": self.created, "duplicate": self.duplicate,
                "rejected": self.rejected, "failed": self.failed,
                "acknowledged": self.acknowledged, "retried": self.retried,
                "event_ids_file": ack_log}


class Sender:
    """Post units taken from the queue; tally the producer's verdict on every log."""

    def __init__(self, client: Client, tally: Tally, deferred: Deferred[Unit],
                 drop_rate: float, gzip_batches: bool, ack_file: TextIO | None,
                 random_seed: int | None) -> None:
        self.client, self.tally, self.deferred = client, tally, deferred
        self.drop_rate, self.gzip = drop_rate, gzip_batches
        self.ack_file, self.ack_lock = ack_file, threading.Lock()
        self.rng = random.Random(None if random_seed is None else random_seed + 2)
        self.abort = threading.Event()

    def work(self, q: queue.Queue[Unit | None]) -> None:
        """Run one sender thread until it takes ``None`` from the queue."""
        while (unit := q.get()) is not None:
            try:
                if not self.abort.is_set():
                    self.send(unit)
            finally:
                q.task_done()

    def send(self, unit: Unit) -> None:
        if self.drop_rate and not unit.dropped and self.rng.random() < self.drop_rate:
            unit.dropped = True  # abandoned once: before sending, or its reply is lost
            self.tally.retry()
            self.deferred.add(time.monotonic() + self.rng.uniform(0.5, 3.0), unit)
            if self.rng.random() < 0.5:
                self._post(unit)
            return
        self._handle(unit, self._post(unit))

    def _post(self, unit: Unit) -> httpx.Response | GaveUp:
        body = _encode(unit.events[0] if unit.single else unit.events)
        headers = {"Content-Type": "application/json"}
        if self.gzip and not unit.single:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            return self.client.post("/v1/activities", content=body, headers=headers)
        except GaveUp as e:
            return e

    def _handle(self, unit: Unit, resp: httpx.Response | GaveUp) -> None:
        n = len(unit.events)
        if isinstance(resp, GaveUp):
            log.warning("%s", resp)
            self.tally.add(failed=n)
        elif resp.status_code in (401, 403):
            self.tally.fatal = f"the producer refused the simulator: {error_message(resp)}"
            self.tally.add(failed=n)
            self.abort.set()
        elif resp.status_code >= 400:
            log.warning("rejected %d log(s): %s", n, error_message(resp))
            self.tally.add(rejected=n)
        elif unit.single:
            created = resp.status_code == 201
            self.tally.add(created=int(created), duplicate=int(not created))
            self._ack([unit.events[0]["event_id"]])
        else:
            doc = resp.json()
            self.tally.add(doc["created"], doc["duplicate"], doc["rejected"])
            self._ack([it["event_id"] for it in doc["items"]
                       if it["status"] in ("created", "duplicate")])

    def _ack(self, ids: list[str]) -> None:
        if self.ack_file is not None and ids:
            with self.ack_lock:
                self.ack_file.write("\n".join(ids) + "\n")


class Status:
    """Progress on stderr: a bar with rate and ETA on a terminal, a line every
    ``period`` seconds otherwise, the final line at the end; nothing when ``quiet``."""

    def __init__(self, tally: Tally, quiet: bool, total: int | None = None,
                 period: float = 10.0) -> None:
        self.tally, self.quiet, self.total, self.period = tally, quiet, total, period
        self.start = self.last = time.monotonic()
        self.bar: Progress | None = None
        self.console: Console | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> Status:
        if not self.quiet:
            from rich.console import Console

            self.console = Console(stderr=True)
            if self.console.is_terminal:
                self.bar = self._bar()
                self.bar.__enter__()
                self.task = self.bar.add_task("simulate", total=self.total, counts="")
        return self

    def _bar(self) -> Progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        return Progress(TextColumn("sent"), BarColumn(), MofNCompleteColumn(),
                        TaskProgressColumn(), TextColumn("{task.fields[counts]}"),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        console=self.console, auto_refresh=False)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.bar is not None:
            self._refresh()
            self.bar.__exit__(exc_type, exc, tb)
        elif self.console is not None:
            self.console.print(self.line(), highlight=False)

    def line(self) -> str:
        t, elapsed = self.tally, max(time.monotonic() - self.start, 1e-9)
        done = f"{t.sent}/{self.total}" if self.total is not None else f"{t.sent}"
        text = (f"sent {done} created {t.created} dup {t.duplicate} rejected {t.rejected} "
                f"failed {t.failed} retried {t.retried} {t.sent / elapsed:,.0f}/s")
        if self.total and t.sent:
            text += f" ETA {max(self.total - t.sent, 0) * elapsed / t.sent:,.0f} s"
        return text

    def _refresh(self) -> None:
        t = self.tally
        assert self.bar is not None and self.task is not None  # called while the bar shows
        self.bar.update(self.task, completed=t.sent, refresh=True,
                        counts=f"created {t.created} dup {t.duplicate} failed {t.failed}")

    def update(self) -> None:
        now = time.monotonic()
        if self.bar is not None and now - self.last >= 0.25:
            self.last = now
            self._refresh()
        elif self.bar is None and self.console is not None and now - self.last >= self.period:
            self.last = now
            self.console.print(self.line(), highlight=False)


def run(plan: Plan, token: str | None, quiet: bool = True, period: float = 10.0) -> Tally:
    """Run a simulation to its end; return the tally."""
    tally, deferred, stop = Tally(), Deferred[Unit](), threading.Event()
    fleet = Fleet(plan.users, plan.random_seed, plan.offline_rate)
    client = Client(plan.url, token, random_seed=plan.random_seed, pool=plan.concurrency,
                    on_retry=tally.retry)
    q: queue.Queue[Unit | None] = queue.Queue(maxsize=plan.concurrency * 4)
    with client, open(plan.ack_log or "/dev/null", "a") as ack_file:
        sender = Sender(client, tally, deferred, plan.drop_rate, plan.gzip,
                        ack_file if plan.ack_log else None, plan.random_seed)
        threads = [threading.Thread(target=sender.work, args=(q,), daemon=True)
                   for _ in range(plan.concurrency)]
        for t in threads:
            t.start()
        status = Status(tally, quiet, plan.count, period)
        with stop_on_signals(stop, sender.abort), status:
            Dispatcher(plan, fleet, q, deferred, stop, sender.abort, status.update).run()
            for _ in threads:
                q.put(None)
            for t in threads:
                t.join()
    return tally
