"""WSGI servers compared on the same machine and load: granian and gunicorn gthread.

Each server, with 2 workers and 2 or 8 request threads, serves the trivial endpoint (server
overhead alone), the producer (single-log POST) and the consumer (the per-user query of the
big store, 8 clients): the settings ``watchlog serve`` reads (``WATCHLOG_SERVER``,
``WATCHLOG_THREADS``) pick each, so what is measured is what ships.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from bench import ingest, reads
from bench.modes import Mode
from bench.stack import Service, Stack

SHAPES = (("granian", "2"), ("granian", "8"), ("gunicorn", "2"), ("gunicorn", "8"))


def _serve(stack: Stack, target: str, name: str, server: str, threads: str) -> Service:
    env = {"WATCHLOG_SERVER": server, "WATCHLOG_WORKERS": "2", "WATCHLOG_THREADS": threads}
    if target == "trivial":
        return stack.serve_trivial(name, **env)
    role = "producer" if target == "producer" else "consumer"
    return stack.serve(name, [sys.executable, "-m", "watchlog", "serve", role], "/ready", **env)


def compare(stack: Stack, mode: Mode, run: str, work: Path) -> dict[str, Any]:
    """Requests/s and latency of each server and thread count, per app."""
    out: dict[str, Any] = {}
    short = dataclasses.replace(mode, seconds=mode.compare_seconds)
    for target in mode.compare_targets:
        for server, threads in SHAPES:
            name = f"{target}@{server} 2x{threads}"
            svc = _serve(stack, target, name, server, threads)
            try:
                if target == "trivial":
                    r = ingest.trivial(stack, svc, short, run)
                elif target == "producer":
                    r = ingest.post(stack, svc, short, 1, f"{run}{server[:2]}{threads}")
                else:
                    r = reads.get(stack, svc, short, reads.query_paths(mode, work))
            finally:
                stack.stop_service(name)
            out[name] = {k: r[k] for k in ("rps", "p50_ms", "p99_ms", "errors",
                                           "server_cpu_cores")}
    return out
