"""Where the producer's time goes under load: py-spy samples of its workers, summarised.

py-spy samples every worker (``--subprocesses``) while wrk drives a scenario, only the
thread holding the GIL (``--gil``: Python CPU time, not threads waiting on sockets).
``self`` is the share of samples whose innermost frame is the function; ``total`` the
share in which it is on the stack at all.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import ingest
from bench.modes import Mode
from bench.stack import Service, Stack

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:)]+)(?::\d+)?\)$")
TOP = 12


def available() -> bool:
    return Path(PY_SPY).exists()


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    argv = [PY_SPY, "record", "--pid", str(pid), "--subprocesses", "--format", "raw",
            "--rate", "250", "--gil", "--duration", str(max(1, round(seconds))), "--nonblocking",
            "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def label(frame: str) -> str:
    """Shorten ``func (path/to/module.py:12)`` to ``module.func``."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for root in ("site-packages/", "src/"):
        if root in path:
            path = path.split(root, 1)[1]
    return f"{path.removesuffix('.py').replace('/', '.')}.{m.group('func')}"


def summarise(raw: str) -> dict[str, Any]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [label(f) for f in stack.split(";") if not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        n = int(count)
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    ours = Counter({f: v for f, v in total.items() if "watchlog" in f})
    return {"samples": samples, "self_pct": _top(own, samples), "total_pct": _top(ours, samples)}


def _top(counts: Counter[str], samples: int) -> list[tuple[str, float]]:
    return [(f, round(100 * v / samples, 1)) for f, v in counts.most_common(TOP)]


def profile(stack: Stack, svc: Service, mode: Mode, batch: int, run: str,
            workdir: Path) -> dict[str, Any]:
    """Sample the producer's workers while wrk POSTs ``batch`` logs per request."""
    out = workdir / f"profile-{batch}.txt"
    spy = record(svc.proc.pid, mode.profile_seconds, out)
    time.sleep(0.5)  # py-spy attaches
    load = ingest.post(stack, svc, mode, batch, run, seconds=mode.profile_seconds)
    _, err = spy.communicate(timeout=mode.profile_seconds + 30)
    if not out.exists():
        return {"error": err.decode(errors="replace")[-300:]}
    return {"events_per_s_while_sampled": load["events_per_s"], **summarise(out.read_text())}
