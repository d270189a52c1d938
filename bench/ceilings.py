"""The ceilings the targets are ratios of, measured in the same run as the scenarios."""

from __future__ import annotations

import csv
import io
import subprocess
import time
from typing import Any

from bench import load
from bench.measure import per_event, probe
from bench.stack import Stack
from watchlog.store import Store
from watchlog.store.cluster import LIBRARY, load_library

# Two keys in one slot, the core of an event write (idempotent body + time index).
BENCH_LUA = ("if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then "
             "redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2]) end return 1")
BODY = "x" * 130  # about a stored body's size


def direct_write(stack: Stack, events: int, run: str) -> dict[str, Any]:
    """Time ``Store.ingest`` on pre-built 1,000-event batches (no HTTP), and decode+validate."""
    raws = list(load.raw_logs(events, list(range(100_000)), load.yesterday_ms(), run))
    t0 = time.perf_counter()
    built = load.build_events(raws)
    validate_s = time.perf_counter() - t0
    store = Store(stack.settings())
    store.ingest(built[:1])  # connect and warm the script cache outside the timing
    with probe(stack.cluster) as p:
        t0 = time.perf_counter()
        for i in range(1, len(built), 1000):
            store.ingest(built[i:i + 1000])
        secs = time.perf_counter() - t0
    store.close()
    return {"events_per_s": round((len(built) - 1) / secs), "events": len(built) - 1,
            "decode_validate_events_per_s": round(len(raws) / validate_s),
            "decode_validate_us_per_event": round(validate_s / len(raws) * 1e6, 2),
            **p.result, **per_event(p.result, len(built) - 1)}


# The floor of one write call: the store's ingest function cut where it has read and parsed
# its arguments, so that it writes only the attempt's answer and says "created" for every
# log. What a call costs Redis before any of a log's own writes: a one-log request costs at
# least this, however cheap its writes become.
FLOOR_CUT = "  local out, marks, days, feed = {}, {}, {}, {}\n"
FLOOR_RETURN = """  do
    local floor = {}
    for g = 1, ngroups do for _ = 1, #groups[g][3] do floor[#floor + 1] = 1 end end
    redis.call('SET', attempt, table.concat(floor), 'EX', KEEP)
    return floor
  end
"""


def floor_library() -> str:
    """The store's function library with the ingest function cut to its floor."""
    if LIBRARY.count(FLOOR_CUT) != 1:
        raise RuntimeError("wl_ingest changed: bench/ceilings.py FLOOR_CUT no longer marks "
                           "where its writes begin")
    return LIBRARY.replace(FLOOR_CUT, FLOOR_RETURN + FLOOR_CUT)


def _load(stack: Stack, library: str) -> None:
    rc = stack.cluster.admin_client()
    try:
        load_library(rc, library)
        codes = rc.execute_command("FUNCTION", "LIST", "WITHCODE", target_nodes=rc.PRIMARIES)
    finally:
        rc.close()
    for node, libraries in codes.items():
        if [lib["library_code"] for lib in libraries] != [library]:
            raise RuntimeError(f"master {node} does not hold the library just loaded")


def store_ingest(stack: Stack, events: int, batch: int, run: str) -> dict[str, Any]:
    """Redis CPU of storing ``events`` new logs through ``Store.ingest``, ``batch`` per call."""
    raws = list(load.raw_logs(events + 1, list(range(100_000)), load.yesterday_ms(), run))
    built = load.build_events(raws)
    store = Store(stack.settings())
    try:
        store.ingest(built[:1])  # connect outside the measurement
        with probe(stack.cluster) as p:
            t0 = time.perf_counter()
            for i in range(1, len(built), batch):
                store.ingest(built[i:i + batch])
            secs = time.perf_counter() - t0
    finally:
        store.close()
    return {"events": events, "batch": batch, "events_per_s": round(events / secs),
            **p.result, **per_event(p.result, events)}


def function_floor(stack: Stack, calls: int, run: str) -> dict[str, Any]:
    """Redis CPU of one-log ``Store.ingest`` calls while ``wl_ingest`` is cut to its floor
    (the real library is loaded again before this returns, and checked)."""
    _load(stack, floor_library())
    try:
        r = store_ingest(stack, calls, 1, run)
    finally:
        _load(stack, LIBRARY)
        stack.flush()
    r["calls_per_s"] = r.pop("events_per_s")  # one call per log: the report counts calls
    return r


def redis_benchmark(stack: Stack, requests: int) -> dict[str, Any]:
    """Run redis-benchmark's pipelined two-key Lua call on every master of the cluster."""
    rc = stack.cluster.admin_client()
    try:
        sha = rc.script_load(BENCH_LUA)  # loaded on every master
        argv = ["redis-benchmark", "--cluster", "-h", stack.cluster.host,
                "-p", str(stack.cluster.ports[0]), "--user", "admin",
                "-a", stack.credentials.redis_admin_password, "-P", "64", "-c", "16",
                "-n", str(requests), "-r", "100000", "--csv",
                "EVALSHA", sha, "2", "{tag}:h:__rand_int__", "{tag}:z:__rand_int__",
                "__rand_int__", BODY]
        with probe(stack.cluster) as p:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        rows = list(csv.DictReader(io.StringIO(out.stdout[out.stdout.index('"test"'):])))
    finally:
        stack.flush()
        rc.close()
    row = rows[-1]
    return {"calls_per_s": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
            "p99_ms": float(row["p99_latency_ms"]), "requests": requests,
            "pipeline": 64, "clients": 16, **p.result, **per_event(p.result, requests)}
