"""The Redis node entrypoint and cluster-init, run for real against `redis-server` on loopback.

The entrypoint renders the same ACL file as the native launcher, byte for byte; six nodes it
starts (Debian's Redis 7) are made a cluster by cluster-init.sh once, a re-run is a no-op,
replicas are added later, and after all nodes come back at new addresses the cluster heals with
the data back from the AOF; the apps' own store code works as the `watchlog` ACL user while
FLUSHALL and foreign keys are refused. Nodes 7-8 joined and rebalanced by the same script:
tests/launcher/test_scaling.py. A missing tool fails its test with the command that installs
it (tests/helpers.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from helpers import REDIS_DIR, REDIS_PASSWORDS, ROOT, Nodes, clean_env, free_ports
from helpers import require_tool as tool
from helpers import run_command as run

# ---- Redis: the entrypoint and cluster-init, for real on loopback ------------------------------


def redis_version() -> tuple[int, int]:
    out = run(tool("redis-server"), "--version").stdout
    major, minor = re.search(r"v=(\d+)\.(\d+)", out).groups()  # type: ignore[union-attr]
    return int(major), int(minor)


def test_redis_acl_is_the_native_launchers(tmp_path: Path) -> None:
    """Compose's generated users.acl equals the launcher's, byte for byte (one set of rules)."""
    from watchlog.core.credentials import Credentials
    from watchlog.launcher.redis.conf import render_acl

    version = redis_version()
    env = {**clean_env(), **REDIS_PASSWORDS, "REDIS_RENDER_ONLY": "1",
           "REDIS_CONF_DIR": str(tmp_path), "REDIS_DATA_DIR": str(tmp_path)}
    run("sh", str(REDIS_DIR / "entrypoint.sh"), env=env)
    creds = Credentials(redis_admin_password=REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"],
                        redis_app_password=REDIS_PASSWORDS["REDIS_WATCHLOG_PASSWORD"],
                        redis_exporter_password=REDIS_PASSWORDS["REDIS_EXPORTER_PASSWORD"])
    assert (tmp_path / "users.acl").read_text() == render_acl(creds, version)
    assert (tmp_path / "users.acl").stat().st_mode & 0o077 == 0
    conf = (tmp_path / "redis.conf").read_text()
    for line in ("appendonly yes", "cluster-preferred-endpoint-type hostname",
                 "cluster-announce-hostname", "masteruser admin", "maxmemory-policy noeviction"):
        assert line in conf


def init(masters: list[int], replicas: list[int] = (), timeout: int = 60,  # type: ignore[assignment]
         ) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(), "REDISCLI_AUTH": REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"],
           "REDIS_MASTERS": " ".join(f"127.0.0.1:{p}" for p in masters),
           "REDIS_REPLICAS": " ".join([*(f"127.0.0.1:{p}" for p in replicas),
                                       "redis-node-absent.invalid:6379"]),
           "REDIS_INIT_TIMEOUT": str(timeout),
           "REDIS_FUNCTIONS": str(ROOT / "src/watchlog/store/lua/library.lua")}
    return run("sh", str(REDIS_DIR / "cluster-init.sh"), env=env, timeout=timeout + 60)


def cluster_nodes(port: int) -> list[list[str]]:
    out = run(tool("redis-cli"), "-p", str(port), "--user", "admin", "CLUSTER", "NODES",
              env={**clean_env(), "REDISCLI_AUTH": REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"]})
    return [line.split() for line in out.stdout.splitlines() if line.strip()]


def wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.25)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    tool("redis-server"), tool("redis-cli")
    if redis_version() < (7, 0):
        pytest.fail("cluster-announce-hostname needs Redis 7: apt-get install redis-server "
                    "from Debian 12 or later", pytrace=False)
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        n.stop_all()


@pytest.mark.slow
def test_cluster_init_creates_once_adds_replicas_and_heals_new_addresses(nodes: Nodes) -> None:
    ports = free_ports(6)
    for i, port in enumerate(ports):
        nodes.start(i, port)
    masters, replicas = ports[:3], ports[3:]

    first = init(masters)
    assert "creating a cluster of 3 masters and 0 replicas" in first.stderr
    assert "skipping redis-node-absent.invalid:6379" in first.stderr
    again = init(masters)  # `docker compose up` once more: nothing to create
    assert "cluster exists" in again.stderr and "creating" not in again.stderr

    init(masters, replicas)  # the `replicas` profile switched on later
    def one_replica_each() -> bool:
        table = cluster_nodes(masters[0])
        return sorted(r[3] for r in table if "slave" in r[2]) == sorted(
            r[0] for r in table if "master" in r[2])
    wait_for(one_replica_each)
    guard = run(tool("redis-cli"), "-p", str(masters[0]), "--user", "admin", "CONFIG", "GET",
                "min-replicas-to-write", env={**clean_env(), "REDISCLI_AUTH":
                                              REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"]})
    assert guard.stdout.split() == ["min-replicas-to-write", "1"]  # docs/chaos.md

    event = check_app_user(masters)

    # `down` then `up`: every node back at another address (ports stand in for IPs here).
    nodes.stop_all()
    moved = free_ports(6)
    for i, port in enumerate(moved):
        nodes.start(i, port)
    healed = init(moved[:3], moved[3:])
    assert "re-introducing" in healed.stderr and "cluster ok" in healed.stderr
    assert len(cluster_nodes(moved[0])) == 6
    # The AOF on the node's volume brought the event back: the same write is a duplicate.
    with app_store(moved[:3]) as store:
        assert store.ingest([event]) == [False]


@contextmanager
def app_store(masters: list[int]) -> Iterator[Any]:
    from watchlog.core.settings import Settings
    from watchlog.store import Store

    store = Store(Settings(redis_url=",".join(f"redis://127.0.0.1:{p}" for p in masters),
                           redis_username="watchlog",
                           redis_password=REDIS_PASSWORDS["REDIS_WATCHLOG_PASSWORD"]))
    try:
        yield store
    finally:
        store.close()


def check_app_user(masters: list[int]) -> Any:
    """The apps' own store code works as the `watchlog` ACL user; dangerous commands do not."""
    from redis import exceptions as rx

    from watchlog.core import schema

    with app_store(masters) as store:
        assert store.ready() == (True, "ok")
        an_hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        activity = schema.decode(json.dumps({
            "user_id": 7, "activity_type": "running", "timestamp": an_hour_ago,
            "duration": 1800, "distance": 5.2, "heart_rate": 150, "calories_burned": 420,
            "location": {"latitude": 37.5, "longitude": -122.3}, "device_id": "watch_3",
            "activity_status": "completed"}))
        event = schema.to_event(activity, now_ms=int(time.time() * 1000))
        assert store.ingest([event]) == [True]
        assert store.ingest([event]) == [False]  # idempotent, and WAIT for the replica passed
        store.extractor_create("deploy-test", "earliest")
        items, _ = store.extractor_batch("deploy-test", "c1", 10, 30_000)
        assert len(items) == 1
        assert store.extractor_ack("deploy-test", [i for i, _ in items]) == []
        with pytest.raises(rx.NoPermissionError):
            store.rc.execute_command("FLUSHALL", target_nodes=store.rc.PRIMARIES)
        with pytest.raises(rx.NoPermissionError):
            store.rc.set("not-watchlog:key", "x")
    return event
