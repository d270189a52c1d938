"""Export formats: Parquet against NDJSON and CSV (and their gzip), and extraction to Parquet.

For the bench's day of logs: each format's export events/s through the consumer API, its
bytes per event (NDJSON and CSV also gzip-compressed, level 6, as an analyst would keep
them), the exporting worker's RSS growth; Parquet's stream against a spool to a temporary
file (in-process, the same merge); extraction events/s to NDJSON batch files and to the
Parquet dataset. The issue's targets are checked in the same run.

In the harness: ``python -m bench`` runs it after the read scenarios. Alone, on a store it
fills itself: ``python -m bench.formats --events 1000000``.
"""

from __future__ import annotations

import gc
import json
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console

from bench import reads, sysinfo
from bench.stack import Service, Stack
from watchlog.api.consumer import parquet
from watchlog.clients.dataset import DatasetExtractor
from watchlog.clients.extractor import Extractor
from watchlog.clients.http import Client
from watchlog.store import Store

console = Console(stderr=True)
FORMATS = ("ndjson", "csv", "parquet")
# The targets, measured in the same run.
TARGETS = (("parquet events/s >= 0.8 x ndjson", "speed_ratio", ">=", 0.8),
           ("parquet bytes <= 0.25 x ndjson", "size_ratio", "<=", 0.25),
           ("parquet export RSS growth < 100 MB", "parquet_rss_mb", "<", 100.0))


def export_one(stack: Stack, svc: Service, fmt: str) -> dict[str, Any]:
    """Download the day in ``fmt``; count bytes (and gzip bytes); watch the worker's RSS."""
    frm = reads.day_start_ms()
    params: dict[str, int | str] = {"from": frm, "to": frm + 86_400_000 - 1, "format": fmt}
    headers = {"Authorization": f"Bearer {stack.credentials.reader_key}"}
    watch = reads.RssWatch(sysinfo.children(svc.proc.pid))
    watch.start()
    size, lines, gz = 0, 0, zlib.compressobj(6, zlib.DEFLATED, 31)
    first_byte = None
    t0 = time.perf_counter()
    with httpx.stream("GET", svc.url + "/v1/activities/export", params=params,
                      headers=headers, timeout=600) as r:
        status = r.status_code
        body = bytearray() if fmt == "parquet" else None
        for chunk in r.iter_raw(1 << 16):
            first_byte = first_byte or time.perf_counter() - t0
            size += len(chunk)
            if body is not None:
                body += chunk
            else:
                lines += chunk.count(b"\n")
    secs = time.perf_counter() - t0
    watch.stopped.set()
    watch.join()
    if body is not None:
        import io

        import pyarrow.parquet as pq

        lines = pq.read_metadata(io.BytesIO(bytes(body))).num_rows
        del body
    else:
        lines -= fmt == "csv"  # the header
    out: dict[str, Any] = {"events": lines, "seconds": round(secs, 2),
                           "events_per_s": round(lines / secs), "bytes": size,
                           "bytes_per_event": round(size / max(lines, 1), 1),
                           "first_byte_s": round(first_byte or 0, 3),
                           "rss_growth_mb": watch.growth_mb(), "errors": int(status != 200)}
    if fmt != "parquet":
        out["gzip_bytes_per_event"] = round(_gzip_size(stack, svc, params, headers, gz)
                                            / max(lines, 1), 1)
    return out


def _gzip_size(stack: Stack, svc: Service, params: dict[str, Any], headers: dict[str, str],
               gz: Any) -> int:
    """Size of the export gzip-compressed (level 6), streamed through zlib once more."""
    gz_size = 0
    with httpx.stream("GET", svc.url + "/v1/activities/export", params=params,
                      headers=headers, timeout=600) as r:
        for chunk in r.iter_raw(1 << 16):
            gz_size += len(gz.compress(chunk))
    return gz_size + len(gz.flush())


class SelfRss(threading.Thread):
    """Peak RSS growth of this process while a block runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import os

        self.pid = os.getpid()
        self.first = self.peak = sysinfo.rss_bytes(self.pid)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            self.peak = max(self.peak, sysinfo.rss_bytes(self.pid))

    def growth_mb(self) -> float:
        self.stopped.set()
        self.join()
        return round((self.peak - self.first) / 2**20, 1)


def stream_or_spool(stack: Stack, work: Path) -> dict[str, Any]:
    """The same Parquet export in-process: streamed chunks, or spooled to a file then read."""
    frm = reads.day_start_ms()
    store = Store(stack.settings())
    out: dict[str, Any] = {}
    try:
        for how in ("stream", "spool"):
            gc.collect()
            rss = SelfRss()
            rss.start()
            t0 = time.perf_counter()
            first = None
            bodies = store.export(frm, frm + 86_400_000 - 1, None)
            if how == "stream":
                size = 0
                for chunk in parquet.parquet_chunks(bodies):
                    first = first or time.perf_counter() - t0
                    size += len(chunk)
            else:
                path = work / "spool.parquet"
                parquet.write_file(bodies, path)
                with path.open("rb") as f:  # what the response would then send
                    first = time.perf_counter() - t0
                    size = sum(len(b) for b in iter(lambda: f.read(1 << 16), b""))
                path.unlink()
            secs = time.perf_counter() - t0
            out[how] = {"seconds": round(secs, 2), "first_byte_s": round(first or 0, 3),
                        "bytes": size, "rss_growth_mb": rss.growth_mb()}
    finally:
        store.close()
    return out


def extraction(stack: Stack, svc: Service, want: int, run: str, work: Path
               ) -> dict[str, Any]:
    """Extract ``want`` logs (1,000 per batch) to NDJSON files and to the Parquet dataset."""
    out: dict[str, Any] = {}
    for fmt, kind in (("ndjson", Extractor), ("parquet", DatasetExtractor)):
        name = f"fmt-{fmt}-{run}"
        with Client(svc.url, stack.credentials.reader_key) as c:
            ex = kind(c, name, work / name, max_items=1000)
            t0 = time.perf_counter()
            while ex.stats.written < want and ex.step():
                pass
            secs = time.perf_counter() - t0
            c.request("DELETE", f"/v1/extractors/{name}")
        size = sum(f.stat().st_size for f in (work / name).rglob("*") if f.is_file())
        out[fmt] = {"events": ex.stats.written, "seconds": round(secs, 2),
                    "events_per_s": round(ex.stats.written / secs),
                    "bytes_per_event": round(size / max(ex.stats.written, 1), 1)}
    return out


def run(stack: Stack, svc: Service, want_extract: int, run_id: str, work: Path
        ) -> dict[str, Any]:
    """Every figure of this module, and the targets."""
    r: dict[str, Any] = {"export": {fmt: export_one(stack, svc, fmt) for fmt in FORMATS}}
    r["parquet_stream_or_spool"] = stream_or_spool(stack, work)
    r["extraction"] = extraction(stack, svc, want_extract, run_id, work)
    e = r["export"]
    measured = {"speed_ratio": e["parquet"]["events_per_s"] / e["ndjson"]["events_per_s"],
                "size_ratio": e["parquet"]["bytes"] / e["ndjson"]["bytes"],
                "parquet_rss_mb": e["parquet"]["rss_growth_mb"]}
    r["targets"] = [{"target": t, "measured": round(measured[k], 3),
                     "met": _met(measured[k], op, v)} for t, k, op, v in TARGETS]
    console.print(markdown(r))
    return r


def _met(x: float, op: str, v: float) -> bool:
    return x >= v if op == ">=" else x <= v if op == "<=" else x < v


def markdown(r: dict[str, Any]) -> str:
    e = r["export"]
    lines = ["| format | events | events/s | bytes/event | gzip bytes/event | first byte s "
             "| worker RSS growth MB |", "|---|---|---|---|---|---|---|"]
    for fmt in FORMATS:
        d = e[fmt]
        lines.append(f"| {fmt} | {d['events']:,} | {d['events_per_s']:,} | "
                     f"{d['bytes_per_event']} | {d.get('gzip_bytes_per_event', '-')} | "
                     f"{d['first_byte_s']} | {d['rss_growth_mb']} |")
    s = r["parquet_stream_or_spool"]
    lines += ["", "| parquet, in-process | seconds | first byte s | RSS growth MB |",
              "|---|---|---|---|"]
    lines += [f"| {how} | {s[how]['seconds']} | {s[how]['first_byte_s']} | "
              f"{s[how]['rss_growth_mb']} |" for how in ("stream", "spool")]
    x = r["extraction"]
    lines += ["", "| extraction to | events | events/s | bytes/event on disk |",
              "|---|---|---|---|"]
    lines += [f"| {fmt} | {x[fmt]['events']:,} | {x[fmt]['events_per_s']:,} | "
              f"{x[fmt]['bytes_per_event']} |" for fmt in ("ndjson", "parquet")]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |"
              for t in r["targets"]]
    return "\n".join(lines)


@click.command()
@click.option("--events", type=int, default=200_000, show_default=True,
              help="Logs of the bench's day to store, then export.")
@click.option("--extract", "want_extract", type=int, default=100_000, show_default=True,
              help="Logs each extraction reads.")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Write the figures as JSON here.")
def main(events: int, want_extract: int, output: Path | None) -> None:
    """Export and extraction formats on a store of ``--events`` logs (its own cluster)."""
    run_id = time.strftime("%Y%m%dT%H%M%S")
    with tempfile.TemporaryDirectory(prefix="watchlog-formats-") as tmp:
        work = Path(tmp)
        stack = Stack.start(work / "state")
        try:
            fill = reads.fill(stack, events, list(range(min(100_000, events // 10 or 1))),
                              run_id)
            console.print(f"stored {fill['events']:,} logs in {fill['seconds']} s")
            svc = stack.serve_watchlog("consumer")
            r = run(stack, svc, want_extract, run_id, work)
        finally:
            stack.stop()
    r["stored"] = events
    print(json.dumps(r, indent=2))
    if output:
        output.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
