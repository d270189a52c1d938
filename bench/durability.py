"""The cost of durability: the write scenarios on a cluster with replicas, waiting for them.

A second cluster (3 masters, ``replicas`` each, ``min-replicas-to-write`` as the launcher
sets it) and a producer with ``WATCHLOG_WAIT_REPLICAS`` = ``replicas``: every pipeline
ends with ``WAIT``, so a request is acknowledged once a replica holds its writes. The
single-log and 1,000-log POSTs are measured as in the main run; the report states each
as a ratio to the same scenario of the same run without replicas.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench import ingest
from bench.modes import Mode
from bench.stack import Stack


def measure(mode: Mode, run: str, work: Path, replicas: int) -> dict[str, Any]:
    stack = Stack.start(work / f"state-replicas-{replicas}", replicas=replicas)
    try:
        prod = stack.serve("producer", [sys.executable, "-m", "watchlog", "serve", "producer"],
                           "/ready", WATCHLOG_WAIT_REPLICAS=str(replicas))
        out: dict[str, Any] = {"replicas": replicas}
        for batch, name in ((1, "single_post"), (1000, "batch_1000")):
            out[name] = ingest.post(stack, prod, mode, batch, f"{run}r{replicas}b{batch}")
        stack.stop_service("producer")
    finally:
        stack.stop()
    return out

