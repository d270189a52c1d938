"""The single-log POST against the naive endpoint and the seed's producer: the loop for it.

``python -m bench.single [ROUNDS] [SECONDS]``: one cluster, the naive one-command endpoint
(``bench/naive_app.py``), the seed's producer (``bench/seed_app.py``) and the producer, each
served as ``watchlog up`` serves the producer, the same single-log POSTs from wrk in
interleaved rounds; prints req/s, the server's CPU per request and the masters' CPU per
request of each round, and the producer's ratio to each peer's median.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from bench import ingest
from bench.modes import MODES
from bench.stack import Stack


def main(rounds: int = 3, seconds: float = 8.0) -> None:
    stack = Stack.start(Path(tempfile.mkdtemp(prefix="watchlog-single-")))
    mode = MODES["quick"]
    rps: dict[str, list[float]] = {"naive": [], "seed": [], "producer": []}
    try:
        peers = {"naive": stack.serve_naive("naive"), "seed": stack.serve_seed("seed"),
                 "producer": stack.serve_watchlog("producer")}
        for n in range(rounds):
            for name, svc in peers.items():
                if name != "producer":
                    r = ingest.trivial(stack, svc, mode, f"sn{n}", seconds=seconds)
                else:
                    r = ingest.post(stack, svc, mode, 1, f"sp{n}", seconds=seconds)
                rps[name].append(r["rps"])
                print(f"{name:8} {r['rps']:8.1f} req/s  "
                      f"{r['server_cpu_cores'] / r['rps'] * 1e6:5.0f} µs server CPU/request  "
                      f"{r['redis_cpu_us_per_event']:6.1f} µs Redis CPU/request  "
                      f"p99 {r['p99_ms']} ms", flush=True)
        for peer in ("naive", "seed"):
            ratio = statistics.median(rps["producer"]) / statistics.median(rps[peer])
            print(f"producer / {peer} (medians): {ratio:.2f}")
    finally:
        stack.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3,
         float(sys.argv[2]) if len(sys.argv) > 2 else 8.0)
