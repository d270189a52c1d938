"""WSGI servers compared on the same machine and load: gunicorn gthread, gunicorn sync, granian.

Each serves the trivial endpoint (server overhead alone) and the producer (single-log POST,
the real work), two workers each as ``WATCHLOG_WORKERS`` says; wrk sends the same request.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from bench import ingest
from bench.modes import Mode
from bench.stack import Stack

GRANIAN = shutil.which("granian") or str(Path(sys.executable).with_name("granian"))
PRODUCER = "watchlog.producer.app:create_app"


def servers(target: str) -> dict[str, tuple[list[str], str]]:
    """Return, per server, its argv (``{port}`` filled in later) and its ready path."""
    app = "bench.trivial_app:app" if target == "trivial" else PRODUCER
    factory = [] if target == "trivial" else ["--factory"]
    gunicorn = [sys.executable, "-m", "gunicorn", "-b", "127.0.0.1:{port}", "-w", "2"]
    ready = "/" if target == "trivial" else "/ready"
    call = app if target == "trivial" else app + "()"
    return {
        "gunicorn-gthread": ([*gunicorn, "-k", "gthread", "--threads", "8", call], ready),
        "gunicorn-sync": ([*gunicorn, "-k", "sync", call], ready),
        "granian": ([GRANIAN, "--interface", "wsgi", "--host", "127.0.0.1", "--port", "{port}",
                     "--workers", "2", "--blocking-threads", "8", "--log-level", "warning",
                     *factory, app], ready),
    }


def compare(stack: Stack, mode: Mode, run: str) -> dict[str, Any]:
    """Single-log POST requests/s and latency of each server, trivial app and producer."""
    out: dict[str, Any] = {}
    for target in mode.compare_targets:
        for server, (argv, ready) in servers(target).items():
            if server == "granian" and not Path(GRANIAN).exists():
                continue
            name = f"{target}@{server}"
            svc = stack.serve(name, argv, ready)
            try:
                if target == "trivial":
                    r = ingest.trivial(stack, svc, mode, run, seconds=mode.compare_seconds)
                else:
                    r = ingest.post(stack, svc, mode, 1, f"{run}{server[-2:]}",
                                    seconds=mode.compare_seconds)
            finally:
                stack.stop_service(name)
            out[name] = {k: r[k] for k in ("rps", "p50_ms", "p99_ms", "errors",
                                           "server_cpu_cores")}
    return out
