"""The native launcher against real redis-server processes: no mocks, free ports."""

from __future__ import annotations

import socket
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from tools import require_tool
from watchlog.launcher.credentials import Credentials, load_or_create, read_env_file
from watchlog.launcher.procs import BUS_OFFSET, LauncherError, free_redis_ports
from watchlog.launcher.redis_cluster import LocalCluster
from watchlog.launcher.redis_conf import EXPORTER_USER
from watchlog.launcher.services import Ports
from watchlog.launcher.stack import Stack
from watchlog.settings import Settings


@pytest.fixture(autouse=True)
def _redis_server() -> None:
    """The Redis ACL and launcher proofs need redis-server: missing, the run fails."""
    require_tool("redis-server")

TAG = "{p00.ee0}"  # one hash tag: every key below lives in one slot
SCRIPT = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); return redis.call('HLEN', KEYS[1])"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def rcluster(state: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(state, base_port=None, credentials=load_or_create(state))
    c.start()
    yield c
    c.stop()


@pytest.fixture
def app(rcluster: LocalCluster) -> Iterator[RedisCluster]:
    rc = RedisCluster(startup_nodes=[ClusterNode(rcluster.host, p) for p in rcluster.ports],
                      username="watchlog", password=rcluster.credentials.redis_app_password,
                      decode_responses=True)
    yield rc
    rc.close()


def test_credentials_file_is_private_and_stable(tmp_path: Path) -> None:
    creds = load_or_create(tmp_path)
    path = tmp_path / "credentials.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(tmp_path) == creds
    values = read_env_file(path)
    assert values["WATCHLOG_REDIS_USERNAME"] == "watchlog"
    assert values["WATCHLOG_REDIS_PASSWORD"] == creds.redis_app_password
    assert creds.app_env()["WATCHLOG_INGEST_TOKEN"] == creds.ingest_token
    assert creds.redis_admin_password not in repr(creds)


def test_cluster_forms_three_masters_covering_every_slot(rcluster: LocalCluster) -> None:
    nodes = rcluster.nodes()
    assert [n.role for n in nodes] == ["master"] * 3
    assert sum(n.slots for n in nodes) == 16384
    for port in rcluster.ports:
        node = rcluster.node_client(port)
        assert "cluster_state:ok" in node.execute_command("CLUSTER", "INFO")
        assert node.config_get("appendonly") == {"appendonly": "yes"}
        node.close()


def test_cluster_start_again_reuses_running_nodes(rcluster: LocalCluster) -> None:
    pids = [n.pid for n in rcluster.nodes()]
    rcluster.start()
    assert [n.pid for n in rcluster.nodes()] == pids


def test_app_user_runs_what_the_apps_use(app: RedisCluster) -> None:
    key, feed = f"wl:{TAG}:e:1:20261127", f"wl:{TAG}:feed"
    sha = app.script_load(SCRIPT)
    node = app.get_node_from_key(key)
    pipe = app.get_redis_connection(node).pipeline(transaction=False)
    pipe.evalsha(sha, 1, key, "a", "1").evalsha(sha, 1, key, "b", "2")
    pipe.execute_command("WAIT", 0, 50)
    assert pipe.execute() == [1, 2, 0]
    with app.pipeline() as cp:
        cp.zadd(f"wl:{TAG}:t:1:20261127", {"a": 1}).expireat(key, 4102444800).hgetall(key)
        assert cp.execute()[-1] == {"a": "1", "b": "2"}
    app.xgroup_create(feed, "reports", id="0", mkstream=True)
    app.xadd(feed, {"e": "a"})
    assert app.xreadgroup("reports", "c1", {feed: ">"}, count=10)
    assert app.xautoclaim(feed, "reports", "c2", min_idle_time=0)[1]
    assert app.xinfo_groups(feed)[0]["name"] == "reports"
    assert app.xinfo_stream(feed)["length"] == 1
    assert app.info("server", target_nodes=RedisCluster.PRIMARIES)


@pytest.mark.parametrize("command", [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "masterauth"), ("KEYS", "*"),
    ("SCRIPT", "FLUSH"), ("SET", "other:key", "1"), ("ACL", "LIST"), ("CLUSTER", "RESET"),
])
def test_app_user_is_refused_dangerous_commands(rcluster: LocalCluster, command: tuple) -> None:
    client = redis.Redis(rcluster.host, rcluster.ports[0], username="watchlog",
                         password=rcluster.credentials.redis_app_password)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)
    client.close()


def test_anonymous_and_wrong_password_are_refused(rcluster: LocalCluster) -> None:
    once = Retry(NoBackoff(), 0)  # redis-py retries connection errors, AUTH failures included
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(rcluster.host, rcluster.ports[0], retry=once).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(rcluster.host, rcluster.ports[0], username="admin", password="guess",
                    retry=once).ping()


def test_exporter_user_reads_stats_only(rcluster: LocalCluster) -> None:
    client = redis.Redis(rcluster.host, rcluster.ports[0], username=EXPORTER_USER,
                         password=rcluster.credentials.redis_exporter_password)
    assert client.info("server")["redis_version"]
    for command in (("CONFIG", "GET", "masterauth"), ("GET", "wl:x"), ("SET", "wl:x", "1")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    client.close()


def test_redis_exporter_scrapes_without_noperm(rcluster: LocalCluster, tmp_path: Path) -> None:
    exporter = require_tool("prometheus-redis-exporter")
    port = free_redis_ports("127.0.0.1", 1)[0]
    admin = rcluster.node_client(rcluster.ports[0])
    admin.execute_command("ACL", "LOG", "RESET")
    env = {"REDIS_USER": EXPORTER_USER,
           "REDIS_PASSWORD": rcluster.credentials.redis_exporter_password}
    proc = subprocess.Popen([exporter, "--redis.addr=", "--config-command=-",
                             f"--web.listen-address=127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = _get_with_retry(f"http://127.0.0.1:{port}/scrape?target={rcluster.url}")
    finally:
        proc.terminate()
        proc.wait(5)
    assert "\nredis_up 1" in body and "\nredis_cluster_state 1" in body
    assert admin.execute_command("ACL", "LOG") == []


def _get_with_retry(url: str) -> str:
    for _ in range(50):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_reshard_moves_slots_with_their_keys(rcluster: LocalCluster, app: RedisCluster) -> None:
    key = f"wl:{TAG}:pu:20261127"
    app.sadd(key, "7")
    slot = app.keyslot(key)
    source = next(n.port for n in rcluster.nodes() if n.port == app.get_node_from_key(key).port)
    target = next(p for p in rcluster.ports if p != source)
    assert rcluster.reshard(source, target, [slot, slot + 1]) == 2
    app.nodes_manager.initialize()
    assert app.get_node_from_key(key).port == target
    assert app.smembers(key) == {"7"}


def test_restart_keeps_data_written_by_the_app(rcluster: LocalCluster, app: RedisCluster) -> None:
    key = f"wl:{TAG}:a:2:20261127"
    app.set(f"wl:{TAG}:kept", "yes")
    # Script writes reach the AOF inside MULTI/EXEC, replayed as the default user on start.
    two_writes = "redis.call('HSET', KEYS[1], 'running', 3); redis.call('HSET', KEYS[1], 'x', 1)"
    app.eval(two_writes, 1, key)
    rcluster.stop()
    assert all(n.role == "down" for n in rcluster.nodes())
    rcluster.start()
    app.nodes_manager.initialize()
    assert app.get(f"wl:{TAG}:kept") == "yes"
    assert app.hgetall(key) == {"running": "3", "x": "1"}
    for port in rcluster.ports:
        log = (rcluster.node_dir(port) / "redis.log").read_text()
        assert "NOPERM" not in log


def test_pause_freezes_then_continues_a_node(rcluster: LocalCluster) -> None:
    timer = rcluster.pause(rcluster.ports[1], 0.5)
    with pytest.raises(redis.exceptions.TimeoutError):
        rcluster.node_client(rcluster.ports[1], timeout=0.2).ping()
    timer.join()
    assert rcluster.node_client(rcluster.ports[1]).ping()


def test_taken_port_is_named(tmp_path: Path) -> None:
    port = free_redis_ports("127.0.0.1", 1)[0]
    for taken, name in ((port, f"port {port} "), (port + BUS_OFFSET, "cluster bus")):
        with socket.socket() as s:
            # as servers bind: a TIME_WAIT leftover of an earlier test must not fail the bind
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", taken))
            s.listen()
            c = LocalCluster(tmp_path, base_port=port, masters=1, credentials=Credentials())
            with pytest.raises(LauncherError, match=name):
                c.start()


@pytest.mark.chaos
def test_replicas_take_over_a_killed_master(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, base_port=None, replicas=1, credentials=load_or_create(tmp_path))
    c.start()
    try:
        roles = [n.role for n in c.nodes()]
        assert roles.count("master") == 3 and roles.count("replica") == 3
        victim = c.nodes()[0]
        c.kill(victim.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            nodes = {n.port: n for n in c.nodes()}
            if sum(n.slots for n in nodes.values() if n.role == "master") == 16384:
                break
            time.sleep(0.2)
        print(f"failover in {10 - (deadline - time.monotonic()):.1f} s")
        assert nodes[victim.port].role == "down"
        assert [n.role for n in nodes.values()].count("master") == 3
    finally:
        c.stop()


def _stack(state: Path, **kwargs: object) -> Stack:
    host = "127.0.0.1"
    ports = free_redis_ports(host, 8)
    return Stack(Settings(host=host), state, redis_port=None, simulate=False, monitoring=False,
                 ports=Ports(*ports[1:]), **kwargs)  # type: ignore[arg-type]


def test_stack_refuses_a_taken_port_before_starting_anything(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", stack.ports.consumer))
        s.listen()
        with pytest.raises(LauncherError, match=f"port {stack.ports.consumer} .*consumer"):
            stack.up(detach=True)
    assert not (tmp_path / "pids.json").exists()
    assert all(row["state"] == "stopped" for row in stack.status())


@pytest.mark.slow
def test_stack_up_detached_then_status_then_down(tmp_path: Path) -> None:
    stack = _stack(tmp_path, masters=1)
    try:
        stack.up(detach=True)
        rows = {r["component"]: r for r in Stack(Settings(), tmp_path).status()}
        assert {r["state"] for r in rows.values()} == {"running"}
        assert {"producer", "consumer"} <= rows.keys()
    finally:
        stopped = Stack(Settings(), tmp_path).down()
    assert "producer" in stopped
    assert all(r["state"] == "stopped" for r in Stack(Settings(), tmp_path).status())
