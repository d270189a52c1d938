"""Measure a scenario: wall time, server CPU (from /proc) and Redis figures (from INFO)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench import sysinfo
from watchlog.launcher.redis.cluster import LocalCluster


def redis_info(cluster: LocalCluster) -> dict[str, float]:
    """Sum the figures of every master: commands, memory, CPU seconds."""
    total = {"commands": 0.0, "used_memory": 0.0, "cpu": 0.0}
    for port in cluster.ports:
        client = cluster.node_client(port)
        try:
            info = client.info()
        finally:
            client.close()
        if info.get("role") != "master":
            continue
        total["commands"] += info["total_commands_processed"]
        total["used_memory"] += info["used_memory"]
        total["cpu"] += info["used_cpu_user"] + info["used_cpu_sys"]
    return total


def wait_quiet(cluster: LocalCluster, timeout: float = 120.0) -> float:
    """Wait until no master rewrites its AOF or saves; return the seconds waited.

    A bulk load triggers AOF rewrites (a fork and a pass over the data each): a scenario
    started during one would measure the rewrite as much as the reads.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        busy = False
        for port in cluster.ports:
            client = cluster.node_client(port)
            try:
                info = client.info("persistence")
            finally:
                client.close()
            busy = busy or any(info.get(k) for k in (
                "aof_rewrite_in_progress", "aof_rewrite_scheduled", "rdb_bgsave_in_progress"))
        if not busy:
            break
        time.sleep(0.2)
    return round(time.monotonic() - t0, 1)


@dataclass
class Probe:
    """Figures around one scenario; ``result`` holds them once the block ends."""

    cluster: LocalCluster
    server_pids: Callable[[], list[int]]
    result: dict[str, Any] = field(default_factory=dict)


@contextmanager
def probe(cluster: LocalCluster, server_pids: Callable[[], list[int]] = list):  # noqa: ANN201
    """Measure the block: server CPU in cores, Redis commands/s, memory and CPU."""
    p = Probe(cluster, server_pids)
    pids = server_pids()
    r0, c0, t0 = redis_info(cluster), sysinfo.cpu_seconds(pids), time.monotonic()
    yield p
    secs = time.monotonic() - t0
    r1, c1 = redis_info(cluster), sysinfo.cpu_seconds(pids)
    p.result = {
        "server_cpu_cores": round((c1 - c0) / secs, 2) if pids else None,
        "redis_cmds_per_s": round((r1["commands"] - r0["commands"]) / secs),
        "redis_cpu_cores": round((r1["cpu"] - r0["cpu"]) / secs, 2),
        "redis_mem_mb": round(r1["used_memory"] / 2**20, 1),
    }
