"""Read scenarios on a store of known size: per-user query, report, export, extraction."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import load, sysinfo
from bench.measure import probe, redis_info, wait_quiet
from bench.modes import Mode
from bench.stack import Service, Stack
from watchlog.store import Store

LOAD_CHUNK = 20_000
QUERY_USER0 = 10_000_000  # query users' ids start here, apart from the fleet's


def day_start_ms() -> int:
    """Return the day every read scenario's data lives on (yesterday, UTC)."""
    return load.yesterday_ms()


def fill(stack: Stack, count: int, users: list[int], run: str) -> dict[str, Any]:
    """Store ``count`` logs of ``users`` directly (Store.ingest, 1,000 per call)."""
    store = Store(stack.settings())
    mem0, json_bytes, t0 = redis_info(stack.cluster)["used_memory"], 0, time.perf_counter()
    raws = load.raw_logs(count, users, day_start_ms(), run, seed=len(users))
    for chunk in load.batches(raws, LOAD_CHUNK):
        json_bytes += sum(map(len, chunk))
        events = load.build_events(chunk)
        for i in range(0, len(events), 1000):
            store.ingest(events[i:i + 1000])
    store.close()
    mem = redis_info(stack.cluster)["used_memory"] - mem0
    return {"events": count, "seconds": round(time.perf_counter() - t0, 1),
            "quiet_wait_s": wait_quiet(stack.cluster),
            "redis_bytes_per_event": round(mem / count, 1),
            "json_bytes_per_event": round(json_bytes / count, 1)}


def query_paths(mode: Mode, workdir: Path) -> Path:
    """Write the per-user queries (one UTC day, a page of 100) for wrk."""
    frm = day_start_ms()
    to = frm + 86_400_000 - 1
    path = workdir / "query-paths.txt"
    path.write_text("".join(
        f"/v1/users/{QUERY_USER0 + u}/activities?from={frm}&to={to}&limit=100\n"
        for u in range(mode.query_users)))
    return path


def get(stack: Stack, svc: Service, mode: Mode, paths: Path,
        connections: int = 8) -> dict[str, Any]:
    """GET the listed paths in turn from ``connections`` clients, after a 2 s warm-up."""
    args = [stack.credentials.reader_key, str(paths)]
    load.wrk(svc.url, "get.lua", args, seconds=2, connections=connections)
    with probe(stack.cluster, lambda: sysinfo.tree(svc.proc.pid)) as p:
        w = load.wrk(svc.url, "get.lua", args, seconds=mode.seconds, connections=connections)
    return {**w, **p.result}


def report_paths(workdir: Path) -> Path:
    day = datetime.fromtimestamp(day_start_ms() / 1000, UTC).date().isoformat()
    path = workdir / "report-paths.txt"
    path.write_text(f"/v1/reports/daily?date={day}\n")
    return path


class RssWatch(threading.Thread):
    """Sample the RSS of a server's workers; ``growth`` is the largest rise of one."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.first = {p: sysinfo.rss_bytes(p) for p in pids}
        self.peak = dict(self.first)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            for p in self.peak:
                self.peak[p] = max(self.peak[p], sysinfo.rss_bytes(p))

    def growth_mb(self) -> float:
        return round(max(self.peak[p] - self.first[p] for p in self.peak) / 2**20, 1)


def export(stack: Stack, svc: Service) -> dict[str, Any]:
    """Stream the whole day as NDJSON; count lines; watch the workers' RSS."""
    frm = day_start_ms()
    params = {"from": frm, "to": frm + 86_400_000 - 1}
    headers = {"Authorization": f"Bearer {stack.credentials.reader_key}"}
    watch = RssWatch(sysinfo.children(svc.proc.pid))
    watch.start()
    lines = size = 0
    with probe(stack.cluster, lambda: sysinfo.tree(svc.proc.pid)) as p:
        t0 = time.perf_counter()
        with httpx.stream("GET", svc.url + "/v1/activities/export", params=params,
                          headers=headers, timeout=60) as r:
            status = r.status_code
            for chunk in r.iter_raw(1 << 16):
                lines += chunk.count(b"\n")
                size += len(chunk)
        secs = time.perf_counter() - t0
    watch.stopped.set()
    watch.join()
    return {"events": lines, "seconds": round(secs, 2), "events_per_s": round(lines / secs),
            "mb_per_s": round(size / secs / 1e6, 1), "errors": int(status != 200),
            "rss_growth_mb": watch.growth_mb(), **p.result}


def _take(client: httpx.Client, name: str) -> tuple[int, int]:
    """Read one batch of up to 1,000 logs and acknowledge it; return (logs, errors)."""
    r = client.post(f"/v1/extractors/{name}/batches", params={"max": 1000})
    if r.status_code != 200:
        return 0, 1
    ids = [i["feed_id"] for i in r.json()["items"]]
    if not ids:
        return 0, 0
    ack = client.post(f"/v1/extractors/{name}/ack", json={"ids": ids})
    return len(ids), int(ack.status_code != 200)


def extraction(stack: Stack, svc: Service, want: int, run: str) -> dict[str, Any]:
    """Read and acknowledge ``want`` logs through an extractor, 1,000 per batch."""
    name = f"bench-{run}"
    client = httpx.Client(base_url=svc.url, timeout=60,
                          headers={"Authorization": f"Bearer {stack.credentials.reader_key}"})
    client.put(f"/v1/extractors/{name}", json={"start": "earliest"}).raise_for_status()
    got = errors = batches = 0
    with probe(stack.cluster, lambda: sysinfo.tree(svc.proc.pid)) as p:
        t0 = time.perf_counter()
        while got < want:
            n, e = _take(client, name)
            got, errors, batches = got + n, errors + e, batches + 1
            if not n:
                break
        secs = time.perf_counter() - t0
    client.delete(f"/v1/extractors/{name}")
    client.close()
    return {"events": got, "batches": batches, "seconds": round(secs, 2),
            "events_per_s": round(got / secs), "errors": errors, **p.result}
