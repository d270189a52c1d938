"""Every metric watchlog exposes, defined once.

Each worker of granian or gunicorn is a process: with ``PROMETHEUS_MULTIPROC_DIR`` set,
prometheus_client writes samples to per-process files and ``/metrics`` merges them, so a
scrape counts every worker's requests exactly once. No label carries a user, device or
event id: label values come from fixed sets (routes are URL rules, not paths).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from watchlog.launcher.procs import alive

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)

HTTP_REQUESTS = Counter(
    "watchlog_http_requests", "HTTP requests answered",
    ["service", "route", "method", "status", "injected"])
HTTP_DURATION = Histogram(
    "watchlog_http_request_duration_seconds", "HTTP request latency",
    ["service", "route", "method"], buckets=LATENCY_BUCKETS)
HTTP_IN_FLIGHT = Gauge(
    "watchlog_http_requests_in_flight", "HTTP requests being served",
    ["service"], multiprocess_mode="livesum")
FAULTS = Counter(
    "watchlog_faults_injected", "Faults injected on purpose", ["service", "route", "kind"])
LOGS_INGESTED = Counter(
    "watchlog_logs_ingested", "Activity logs stored or found duplicate",
    ["activity_type", "result"])
LOGS_REJECTED = Counter("watchlog_logs_rejected", "Activity logs rejected", ["reason"])
BATCH_SIZE = Histogram(
    "watchlog_batch_size", "Activity logs per ingest request", buckets=BATCH_BUCKETS)
REDIS_DURATION = Histogram(
    "watchlog_redis_command_duration_seconds", "Store operation latency (all round trips)",
    ["operation"], buckets=REDIS_BUCKETS)
WRITES_REFUSED = Counter(
    "watchlog_writes_refused",
    "Writes answered 503 because fewer replicas confirmed them than WATCHLOG_WAIT_REPLICAS",
    ["reason"])
EXTRACTION_REDELIVERED = Counter(
    "watchlog_extraction_redelivered", "Extraction entries delivered again", ["extractor"])


def child_cache(metric: Any) -> Callable[..., Any]:
    """Return ``labels(*values)`` of ``metric``, looked up once per set of values.

    ``labels()`` takes a lock and builds its key on every call (~2 us); hot paths with a
    bounded set of label values keep the children instead.
    """
    children: dict[tuple[str, ...], Any] = {}

    def child(*values: str) -> Any:
        c = children.get(values)
        if c is None:
            c = children[values] = metric.labels(*values)
        return c

    return child


_redis_duration = child_cache(REDIS_DURATION)


@contextmanager
def timed(operation: str) -> Iterator[None]:
    """Observe a store operation's latency."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _redis_duration(operation).observe(time.perf_counter() - start)


class ScrapeTimeGauges:
    """A collector whose gauges are computed when Prometheus scrapes (from Redis)."""

    def __init__(self, read: Callable[[], list[tuple[str, str, dict[str, str], float]]]):
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        try:
            samples = self.read()
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is down
            samples = []
        for name, doc, labels, value in samples:
            fam = families.get(name)
            if fam is None:
                fam = families[name] = GaugeMetricFamily(name, doc, labels=list(labels))
            fam.add_metric(list(labels.values()), value)
        yield from families.values()


_DB_PID = re.compile(r"_live\w*_(\d+)\.db$")


def forget_dead_workers() -> list[int]:
    """Drop the live gauges of worker processes that are gone; return their pids.

    A starting worker calls this: a worker that replaces a dead one then removes its
    predecessor's in-flight gauges, which would otherwise be summed into every scrape.
    """
    d = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not d or not os.path.isdir(d):
        return []
    pids = {int(m.group(1)) for f in os.listdir(d) if (m := _DB_PID.search(f))}
    dead = [p for p in sorted(pids) if p != os.getpid() and not alive(p)]
    for pid in dead:
        with suppress(FileNotFoundError):  # another new worker removed it first
            multiprocess.mark_process_dead(pid, d)
    return dead


def render(extra: object | None = None) -> tuple[bytes, str]:
    """Return the exposition text of this process (or of all workers) plus ``extra``."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    if extra is not None:
        scraped = CollectorRegistry()
        scraped.register(extra)  # type: ignore[arg-type]
        text += generate_latest(scraped)
    return text, CONTENT_TYPE_LATEST
