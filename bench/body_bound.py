"""The cost of the request-body time bound (docs/security.md, "Slow clients").

``python -m bench.body_bound [ROUNDS]``: the producer served as ``watchlog up`` serves it,
single-log POSTs from wrk for 8 s, with the bounds off (``WATCHLOG_BODY_TIMEOUT=0``,
``WATCHLOG_BODY_MIN_RATE=0``) and on, alternated; prints req/s and server CPU per request.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench import ingest
from bench.modes import MODES
from bench.stack import Stack

OFF = {"WATCHLOG_BODY_TIMEOUT": "0", "WATCHLOG_BODY_MIN_RATE": "0"}


def main(rounds: int = 2) -> None:
    stack = Stack.start(Path(tempfile.mkdtemp(prefix="watchlog-body-bound-")))
    try:
        for n in range(rounds):
            for bounded in (False, True):
                svc = stack.serve("producer", [sys.executable, "-m", "watchlog", "serve",
                                               "producer"], "/ready", **({} if bounded else OFF))
                r = ingest.post(stack, svc, MODES["quick"], 1, f"bb{n}{int(bounded)}", seconds=8)
                cpu_us = r["server_cpu_cores"] / r["rps"] * 1e6
                print(f"{'on ' if bounded else 'off'} {r['rps']:8.1f} req/s  "
                      f"{cpu_us:5.0f} µs server CPU/request  p99 {r['p99_ms']} ms", flush=True)
                stack.stop_service("producer")
    finally:
        stack.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
