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
    return {"samples": samples, "self_pct": _top(own, samples), "total_pct": _top(ours, samples),
            "hooks_pct": hooks(raw)}


# Where a request's Python time goes, by part: each sample is given to the part of its
# innermost frame that belongs to one (so the store's time inside the view is the
# store's, the limiter's inside the auth wrapper the limiter's).
PARTS = (
    ("store + Redis client", ("watchlog.store.", "redis.", "hiredis")),
    ("metrics (prometheus multiprocess)", ("prometheus_client.", "watchlog.core.metrics.")),
    ("rate limiter", ("watchlog.api.limits.", "limits.")),
    ("faults", ("watchlog.api.faults.",)),
    ("auth", ("watchlog.api.auth.",)),
    ("body bound", ("watchlog.api.bodies.",)),
    ("security headers", ("watchlog.api.security.",)),
    ("hooks (metrics/faults before/after)", ("watchlog.api.hooks.",)),
    ("decode + validate (schema, msgspec)", ("watchlog.core.schema.", "msgspec.")),
    ("the ingest view", ("watchlog.api.",)),
    ("Flask/Werkzeug dispatch", ("flask.", "werkzeug.", "click.", "jinja2.", "blinker.")),
    ("server (granian)", ("granian.",)),
)


def hooks(raw: str) -> list[tuple[str, float]]:
    """Return each part's share of the samples (see ``PARTS``), largest first."""
    counts: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [label(f) for f in stack.split(";")
                  if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        n = int(count)
        samples += n
        counts[_part(frames)] += n
    return [(k, round(100 * v / samples, 1)) for k, v in counts.most_common()] if samples else []


def _part(frames: list[str]) -> str:
    for f in reversed(frames):
        for name, prefixes in PARTS:
            if f.startswith(prefixes):
                return name
    return "other"


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


def main(batch: int = 1, seconds: float = 10.0) -> None:
    """``python -m bench.profile [BATCH] [SECONDS]``: profile the producer alone, print parts."""
    import tempfile

    from bench.modes import MODES

    work = Path(tempfile.mkdtemp(prefix="watchlog-profile-"))
    stack = Stack.start(work / "state")
    try:
        prod = stack.serve_watchlog("producer")
        mode = MODES["full"]
        ingest.post(stack, prod, mode, batch, "warm", seconds=2)
        r = profile(stack, prod, Mode(**{**mode.__dict__, "profile_seconds": seconds}), batch,
                    "prof", work)
    finally:
        stack.stop()
    print(f"{r.get('samples')} samples, {r.get('events_per_s_while_sampled')} events/s")
    for name, pct in r.get("hooks_pct", []):
        print(f"  {pct:5.1f}%  {name}")
    for (f, pct) in r.get("self_pct", []):
        print(f"  self {pct:5.1f}%  {f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1,
         float(sys.argv[2]) if len(sys.argv) > 2 else 10.0)
