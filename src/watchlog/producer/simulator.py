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
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import click
import msgspec
from prometheus_client import Counter, start_http_server

from watchlog.core.metrics import client_registry
from watchlog.http import (
    Client,
    GaveUp,
    NoCredentials,
    StateDir,
    error_message,
    require_token,
    state_dir_option,
)
from watchlog.producer.fleet import Deferred, Dispatcher, Fleet, Plan, Unit

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
                 seed: int | None) -> None:
        self.client, self.tally, self.deferred = client, tally, deferred
        self.drop_rate, self.gzip = drop_rate, gzip_batches
        self.ack_file, self.ack_lock = ack_file, threading.Lock()
        self.rng = random.Random(None if seed is None else seed + 2)
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

    def _post(self, unit: Unit) -> Any:
        body = _encode(unit.events[0] if unit.single else unit.events)
        headers = {"Content-Type": "application/json"}
        if self.gzip and not unit.single:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            return self.client.post("/v1/activities", content=body, headers=headers)
        except GaveUp as e:
            return e

    def _handle(self, unit: Unit, resp: Any) -> None:
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
        self.bar: Any = None
        self.console: Any = None

    def __enter__(self) -> Status:
        if not self.quiet:
            from rich.console import Console

            self.console = Console(stderr=True)
            if self.console.is_terminal:
                self.bar = self._bar()
                self.bar.__enter__()
                self.task = self.bar.add_task("simulate", total=self.total, counts="")
        return self

    def _bar(self) -> Any:
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

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self._refresh()
            self.bar.__exit__(*exc)
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


@contextmanager
def stop_on_signals(stop: threading.Event, abort: threading.Event) -> Iterator[None]:
    """Make Ctrl-C/SIGTERM stop generating (deliver what is held); a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: object) -> None:
        (abort if stop.is_set() else stop).set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(plan: Plan, token: str | None, quiet: bool = True, period: float = 10.0) -> Tally:
    """Run a simulation to its end; return the tally."""
    tally, deferred, stop = Tally(), Deferred[Unit](), threading.Event()
    fleet = Fleet(plan.users, plan.seed, plan.offline_rate)
    client = Client(plan.url, token, seed=plan.seed, pool=plan.concurrency,
                    on_retry=tally.retry)
    q: queue.Queue[Unit | None] = queue.Queue(maxsize=plan.concurrency * 4)
    with client, open(plan.ack_log or "/dev/null", "a") as ack_file:
        sender = Sender(client, tally, deferred, plan.drop_rate, plan.gzip,
                        ack_file if plan.ack_log else None, plan.seed)
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


SEED_RATE = 0.1  # logs/s: the seed's client sent one log every 10 s


def default_rate(rate: float | None, count: int | None, duration: float | None) -> float:
    """Return the pace: as given; else as fast as possible when the run has an end
    (``--count``/``--duration``), else the seed's pace."""
    if rate is not None:
        return rate
    return 0.0 if count is not None or duration is not None else SEED_RATE


@click.command()
@click.option("--url", envvar="WATCHLOG_PRODUCER_URL", default="http://127.0.0.1:5001",
              show_default=True, help="Producer API (env WATCHLOG_PRODUCER_URL).")
@click.option("--users", type=click.IntRange(1), default=100, show_default=True)
@click.option("--rate", type=click.FloatRange(0), default=None,
              help="Logs per second (0: as fast as the producer takes them). Default: as fast "
              f"as possible with --count or --duration, else {SEED_RATE} (the seed's pace).")
@click.option("--batch", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Logs per request (1: single JSON objects).")
@click.option("--gzip/--no-gzip", "gzip_batches", default=True, show_default=True,
              help="Compress batch bodies (Content-Encoding: gzip).")
@click.option("--count", type=click.IntRange(0), default=None, help="Stop after N logs.")
@click.option("--duration", type=click.FloatRange(0), default=None, help="Stop after S s.")
@click.option("--seed", type=int, default=None, help="Replay the same logs and event ids.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of calls a watch drops once and makes again later.")
@click.option("--offline-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Chance per log that its watch goes offline, then sends late in a burst.")
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address /metrics listens on (0.0.0.0 to let another host scrape it).")
@click.option("--ack-log", type=click.Path(dir_okay=False), default=None,
              help="Append every acknowledged event_id to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--progress-every", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds between progress lines when stderr is not a terminal.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@state_dir_option
def simulate(url: str, users: int, rate: float | None, batch: int, gzip_batches: bool,
             count: int | None, duration: float | None, seed: int | None, concurrency: int,
             drop_rate: float, offline_rate: float, metrics_port: int | None,
             metrics_host: str, ack_log: str | None, as_json: bool, progress_every: float,
             quiet: bool, state: StateDir) -> None:
    """Simulate a fleet of watches sending activity logs to the producer."""
    rate = default_rate(rate, count, duration)
    try:
        token = require_token("ingest", state=state)
    except NoCredentials as e:
        raise click.ClickException(str(e)) from None
    plan = Plan(url, users, rate, batch, gzip_batches, count, duration, seed, concurrency,
                drop_rate, offline_rate, ack_log)
    if not quiet:
        pace = f"{rate:g} logs/s" if rate else "as fast as the producer takes them"
        goal = f"{count} logs" if count is not None else (
            f"{duration:g} s" if duration is not None else "until Ctrl-C")
        click.echo(f"simulate: {goal} to {url}, {pace}", err=True)
    server = (start_http_server(metrics_port, addr=metrics_host, registry=REGISTRY)
              if metrics_port else None)
    try:
        tally = run(plan, token, quiet, progress_every)
    finally:
        if isinstance(server, tuple):
            server[0].shutdown()
    if as_json:
        click.echo(_encode(tally.summary(ack_log)).decode())
    if tally.fatal:
        raise click.ClickException(tally.fatal)
    if tally.sent and not tally.acknowledged:
        raise click.ClickException("nothing could be delivered to the producer")
