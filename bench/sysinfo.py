"""What the machine is, and what a process tree costs: read from /proc, no psutil."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def machine() -> dict[str, object]:
    """Return the facts a reader needs to compare two runs."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gb": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "redis": _first_line(["redis-server", "--version"]),
        "wrk": _first_line(["wrk", "--version"]),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0][:80] if text else None


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on


def children(pid: int) -> list[int]:
    """Return the direct children of ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and int(st[1]) == pid:
                out.append(int(entry))
    return out


def tree(pid: int) -> list[int]:
    """Return ``pid`` and its children (gunicorn: the arbiter and its workers)."""
    return [pid, *children(pid)]


def cpu_seconds(pids: list[int]) -> float:
    """Return the user+system CPU seconds the processes have used so far."""
    total = 0
    for pid in pids:
        st = _stat(pid)
        if st is not None:
            total += int(st[11]) + int(st[12])  # utime, stime
    return total / TICK


def rss_bytes(pid: int) -> int:
    st = _stat(pid)
    return int(st[21]) * PAGE if st is not None else 0
