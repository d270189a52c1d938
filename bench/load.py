"""Load generators: wrk (with the Lua scripts in ``bench/wrk``), and events built in Python."""

from __future__ import annotations

import json
import random
import resource
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from watchlog.core import schema

WRK = Path(__file__).resolve().parent / "wrk"
TYPES = ("running", "walking", "cycling", "swimming", "hiking", "yoga")


def wrk(url: str, script: str, args: list[str], *, seconds: float, connections: int,
        threads: int = 1) -> dict[str, float]:
    """Run wrk for ``seconds``; return its summary (requests/s, latency in ms, errors)."""
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(WRK / script), url, "--", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    secs = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "requests": raw["requests"], "seconds": round(secs, 2),
        "rps": round(raw["requests"] / secs, 1), "errors": errors,
        "non_2xx": raw["status"], "connections": connections,
        "p50_ms": raw["p50_us"] / 1000, "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000, "max_ms": raw["max_us"] / 1000,
        "mb_per_s": round(raw["bytes"] / secs / 1e6, 2),
        "client_cpu_cores": round(client_cpu / secs, 2),
    }


def activity(n: int, user: int, ts_ms: int, run: str) -> dict[str, object]:
    """Return one log as a watch sends it (the seed payload, with an event id)."""
    stamp = datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return {
        "user_id": user, "activity_type": TYPES[n % len(TYPES)], "timestamp": stamp + "Z",
        "duration": 600 + n % 3000, "distance": (n % 200) / 10, "heart_rate": 60 + n % 120,
        "calories_burned": 50 + n % 700,
        "location": {"latitude": 37.5, "longitude": -122.3},
        "device_id": f"watch_{user % 50}", "activity_status": "completed",
        "event_id": f"{run}-{n}",
    }


def raw_logs(count: int, users: list[int], day_start_ms: int, run: str,
             seed: int = 7) -> Iterator[bytes]:
    """Yield ``count`` compact JSON logs of ``users`` spread over one UTC day."""
    rnd = random.Random(seed)
    encode = msgspec.json.encode
    for n in range(count):
        ts = day_start_ms + rnd.randrange(86_400_000)
        yield encode(activity(n, rnd.choice(users), ts, run))


def build_events(raws: list[bytes]) -> list[schema.Event]:
    """Decode and validate logs into events (the producer's work before the store)."""
    return [schema.to_event(schema.decode(r)) for r in raws]


def batches(it: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for item in it:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_pool(path: Path, bodies: list[bytes]) -> Path:
    """Write bodies in the format ``wrk/pool.lua`` reads."""
    with path.open("wb") as f:
        f.write((" ".join(map(str, [len(bodies), *map(len, bodies)])) + "\n").encode())
        for b in bodies:
            f.write(b)
    return path


def now_s() -> int:
    return int(time.time())


def yesterday_ms() -> int:
    """Return the start of yesterday (UTC): inside retention, never in the future."""
    return (now_s() // 86400 - 1) * 86_400_000
