"""Measure a scenario: wall time, server CPU (from /proc) and Redis figures (from INFO)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench import sysinfo
from watchlog.launcher.redis.cluster import LocalCluster


def redis_info(cluster: LocalCluster) -> dict[str, Any]:
    """Sum the figures of every master: commands, memory, CPU seconds, and per command
    (``INFO commandstats``) its calls and microseconds."""
    total: dict[str, Any] = {"commands": 0.0, "used_memory": 0.0, "cpu": 0.0, "per_command": {}}
    for port in cluster.ports:
        client = cluster.node_client(port)
        try:
            info = client.info("all")
        finally:
            client.close()
        if info.get("role") != "master":
            continue
        total["commands"] += info["total_commands_processed"]
        total["used_memory"] += info["used_memory"]
        total["cpu"] += info["used_cpu_user"] + info["used_cpu_sys"]
        for k, v in info.items():
            if k.startswith("cmdstat_") and isinstance(v, dict):
                c = total["per_command"].setdefault(k.removeprefix("cmdstat_"), [0, 0])
                c[0] += int(v.get("calls", 0))
                c[1] += int(v.get("usec", 0))
    return total


def command_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Return, per command run during the block, its calls and microseconds (summed over
    the masters; commands run inside functions are counted too), the costliest first."""
    out = {}
    for name, (calls, usec) in after["per_command"].items():
        c0, u0 = before["per_command"].get(name, (0, 0))
        if calls - c0 > 0 and name not in BOOKKEEPING:
            out[name] = {"calls": calls - c0, "usec": usec - u0,
                         "usec_per_call": round((usec - u0) / (calls - c0), 2)}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["usec"]))


BOOKKEEPING = ("info", "cluster|slots", "cluster|nodes", "cluster|shards", "ping")


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
        "redis_cpu_s": round(r1["cpu"] - r0["cpu"], 4),
        "seconds_measured": round(secs, 3),
        "commandstats": command_delta(r0, r1),
    }


def per_event(result: dict[str, Any], events: float) -> dict[str, Any]:
    """Redis CPU (µs) per stored event over the block, and each command's calls and µs per
    event, from a probe's ``result``."""
    if not events:
        return {}
    return {"redis_cpu_us_per_event": round(result["redis_cpu_s"] / events * 1e6, 2),
            "commands_per_event": {k: {"calls": round(v["calls"] / events, 3),
                                       "usec": round(v["usec"] / events, 2),
                                       "usec_per_call": v["usec_per_call"]}
                                   for k, v in result["commandstats"].items()}}
