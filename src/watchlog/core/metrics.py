"""Every metric watchlog exposes, defined once.

Each worker of granian or gunicorn is a process: with ``PROMETHEUS_MULTIPROC_DIR`` set,
prometheus_client writes samples to per-process files and ``/metrics`` merges them, so a
scrape counts every worker's requests exactly once. No label carries a user, device or
event id: label values come from fixed sets (routes are URL rules, not paths).
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

import watchlog
from watchlog.core.process import alive

# In multiprocess mode every sample write first compares ``os.getpid()`` with the pid its
# files belong to (a fork must start its own files): a system call per write, ~10 % of a
# single-log request's CPU in the producer's profile. The pid is kept here instead and
# renewed in every forked child, before any sample is written there. Set before the first
# metric below is made: every value of a process then shares one class (one set of files).
_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))
if values.ValueClass.__name__ == "MmapedValue":  # PROMETHEUS_MULTIPROC_DIR is set
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _PID[0])

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Up to 10 s: a command waits up to the client's 2 s socket timeout (more across a failover's
# retries); buckets that stopped at 1 s capped every quantile at 1.0 exactly when it mattered.
REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                 2.5, 5, 10)
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
# No extractor label: names are chosen by readers, and a counter keeps every label set it
# ever saw until the process restarts. The per-extractor view is the bounded scrape-time lag.
EXTRACTION_REDELIVERED = Counter(
    "watchlog_extraction_redelivered", "Extraction entries delivered again")
SCRAPE_READ_FAILURES = Counter(
    "watchlog_scrape_read_failures", "Scrape-time reads from Redis that failed "
    "(their gauges are missing from that scrape)", ["service"])
# Scrape-time gauges name at most this many extractors (the most behind first); the rest are
# summed under extractor="_other", so a reader creating names cannot grow the exposition.
MAX_LABELLED_EXTRACTORS = 10


M = TypeVar("M", bound=MetricWrapperBase)


def child_cache(metric: M) -> Callable[..., M]:
    """Return ``labels(*values)`` of ``metric``, looked up once per set of values.

    ``labels()`` takes a lock and builds its key on every call (~2 us); hot paths with a
    bounded set of label values keep the children instead.
    """
    children: dict[tuple[str, ...], M] = {}

    def child(*values: str) -> M:
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
    """A collector whose gauges are computed when Prometheus scrapes (from Redis).

    A failed read leaves its gauges out of the scrape (a made-up value would lie) and says so
    twice: ``watchlog_scrape_read_ok`` is 0 in the same scrape, and
    ``watchlog_scrape_read_failures_total`` counts it (alerts need not wait for a vanished
    gauge, which no threshold can catch).
    """

    def __init__(self, read: Callable[[], list[tuple[str, str, dict[str, str], float]]],
                 service: str = "consumer"):
        self.read, self.service = read, service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        ok = GaugeMetricFamily("watchlog_scrape_read_ok",
                               "1 if this scrape's reads from Redis succeeded, else 0",
                               labels=["service"])
        try:
            samples = self.read()
            ok.add_metric([self.service], 1)
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is down
            samples = []
            ok.add_metric([self.service], 0)
            SCRAPE_READ_FAILURES.labels(self.service).inc()
        yield ok
        for name, doc, labels, value in samples:
            fam = families.get(name)
            if fam is None:
                fam = families[name] = GaugeMetricFamily(name, doc, labels=list(labels))
            fam.add_metric(list(labels.values()), value)
        yield from families.values()


_DB_PID = re.compile(r"_live\w*_(\d+)\.db$")
_ANY_PID = re.compile(r"_(\d+)\.db$")


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


def build_info(service: str) -> GaugeMetricFamily:
    """Return ``watchlog_build_info{service, version, python}`` = 1."""
    fam = GaugeMetricFamily("watchlog_build_info", "watchlog version running, always 1",
                            labels=["service", "version", "python"])
    fam.add_metric([service, watchlog.__version__, platform.python_version()], 1)
    return fam


class BuildInfo:
    """A collector yielding ``watchlog_build_info`` (for the clients' own registries)."""

    def __init__(self, service: str) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield build_info(self.service)


def client_registry(service: str) -> CollectorRegistry:
    """Return a registry for a client (simulator, extractor): process metrics and build info."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(BuildInfo(service))
    return registry


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


class WorkerProcesses:
    """``process_*`` of a multi-process server: summed over the serving process and workers.

    prometheus_client's own process collector describes only the process that answers the
    scrape (one worker of several, a different one each time). This one reads every live
    worker named in ``PROMETHEUS_MULTIPROC_DIR`` and the server process that forked them.
    """

    SUMMED = ("process_cpu_seconds_total", "process_resident_memory_bytes",
              "process_virtual_memory_bytes", "process_open_fds")

    def collect(self) -> Iterator[Metric]:
        d = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        pids = {int(m.group(1)) for f in (os.listdir(d) if os.path.isdir(d) else [])
                if (m := _ANY_PID.search(f))} | {os.getpid(), os.getppid()}
        totals: dict[str, float] = {}
        start = float("inf")
        families: dict[str, Metric] = {}
        for pid in sorted(p for p in pids if p > 1 and alive(p)):
            for fam in ProcessCollector(pid=_constant(pid), registry=None).collect():
                families.setdefault(fam.name, fam)
                for sample in fam.samples:
                    if sample.name in self.SUMMED:
                        totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
                    elif sample.name == "process_start_time_seconds":
                        start = min(start, sample.value)
        for name, fam in families.items():
            out = Metric(name, fam.documentation, fam.type)
            for sample in fam.samples:
                value = totals.get(sample.name, sample.value)
                if sample.name == "process_start_time_seconds":
                    value = start
                out.add_sample(sample.name, {}, value)
            yield out


class ServiceLabelled(Collector):
    """Yield ``source``'s families, each ``watchlog_*`` sample labelled ``service``.

    The business metrics shared by both APIs (store latency, refused writes, logs ingested…)
    are observed without a ``service`` label: the hot path then needs no extra label lookup,
    and a process serves exactly one API (its own ``PROMETHEUS_MULTIPROC_DIR``). The label is
    added here, once per scrape, so every ``watchlog_*`` series an API exposes names it,
    whatever the scrape job is called (native, compose, Kubernetes).
    """

    def __init__(self, source: Collector, service: str | None) -> None:
        self.source, self.service = source, service

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            if self.service and family.name.startswith("watchlog_"):
                family.samples = [
                    s if "service" in s.labels
                    else s._replace(labels={"service": self.service, **s.labels})
                    for s in family.samples]
            yield family


def render(extra: Collector | None = None, service: str | None = None) -> tuple[bytes, str]:
    """Return the exposition text of this process (or of all workers) plus ``extra``.

    With ``service``, also ``watchlog_build_info``, the process metrics of every worker, and
    the ``service`` label on every ``watchlog_*`` series (see ``ServiceLabelled``).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        source: Collector = MultiProcessCollector(None)  # unregistered
        processes: Collector | None = WorkerProcesses()
    else:
        source = REGISTRY  # already has this process's process_* metrics
        processes = None
    scraped = CollectorRegistry()
    for collector in (source, extra, processes, BuildInfo(service) if service else None):
        if collector is not None:
            scraped.register(ServiceLabelled(collector, service))
    return generate_latest(scraped), CONTENT_TYPE_LATEST
