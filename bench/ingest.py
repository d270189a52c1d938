"""Write scenarios: the producer under wrk, single logs and batches, plain and compressed."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import zstandard

from bench import load, sysinfo
from bench.measure import per_event, probe
from bench.modes import Mode
from bench.stack import Service, Stack

CONNECTIONS = {1: 16, 100: 8, 1000: 8}


def post(stack: Stack, svc: Service, mode: Mode, batch: int, run: str,
         seconds: float | None = None) -> dict[str, Any]:
    """POST ``batch`` generated logs per request (unique event ids) for ``mode.seconds``."""
    args = ["/v1/activities", stack.credentials.ingest_token, str(batch), run,
            str(load.now_s()), "100000"]
    with probe(stack.cluster, lambda: sysinfo.tree(svc.proc.pid)) as p:
        w = load.wrk(svc.url, "ingest.lua", args, seconds=seconds or mode.seconds,
                     connections=CONNECTIONS[batch])
    return {**w, "events_per_s": round(w["rps"] * batch), "batch": batch, **p.result,
            **per_event(p.result, w["requests"] * batch)}


def pool_bodies(count: int, batch: int, run: str, encoding: str) -> list[bytes]:
    """Return ``count`` batches of new logs, each encoded as a watch would send it."""
    raws = load.raw_logs(count * batch, list(range(100_000)), load.yesterday_ms(), run)
    zc = zstandard.ZstdCompressor(level=3)
    out = []
    for chunk in load.batches(raws, batch):
        body = b"[" + b",".join(chunk) + b"]"
        if encoding == "gzip":
            body = gzip.compress(body, compresslevel=6)
        elif encoding == "zstd":
            body = zc.compress(body)
        out.append(body)
    return out


def post_pool(stack: Stack, svc: Service, mode: Mode, encoding: str, run: str,
              expected_rps: float, workdir: Path) -> dict[str, Any]:
    """POST pre-encoded 1,000-log batches (enough that none is sent twice)."""
    count = int(expected_rps * mode.seconds * 2) + 16
    bodies = pool_bodies(count, 1000, f"{run}{encoding[0]}", encoding)
    path = load.write_pool(workdir / f"pool-{encoding}.bin", bodies)
    args = ["/v1/activities", stack.credentials.ingest_token, str(path), encoding]
    with probe(stack.cluster, lambda: sysinfo.tree(svc.proc.pid)) as p:
        w = load.wrk(svc.url, "pool.lua", args, seconds=mode.seconds, connections=8)
    path.unlink()
    return {**per_event(p.result, w["requests"] * 1000), **w,
            "events_per_s": round(w["rps"] * 1000), "batch": 1000,
            "encoding": encoding, "pool": count, "reused_bodies": w["requests"] > count,
            "bytes_per_request": round(sum(map(len, bodies)) / len(bodies)), **p.result}


def trivial(stack: Stack, svc: Service, mode: Mode, run: str,
            seconds: float | None = None) -> dict[str, Any]:
    """The same single-log POST as the producer's, to the one-route app (or the naive
    RPUSH app, which stores it with one command)."""
    args = ["/", "none", "1", run, str(load.now_s()), "100000"]
    with probe(stack.cluster, lambda: sysinfo.tree(svc.proc.pid)) as p:
        w = load.wrk(svc.url, "ingest.lua", args, seconds=seconds or mode.seconds,
                     connections=CONNECTIONS[1])
    return {**w, **p.result, **per_event(p.result, w["requests"])}
