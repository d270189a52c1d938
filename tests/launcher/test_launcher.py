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

from helpers import require_tool
from watchlog.core.credentials import Credentials, load_or_create, read_env_file
from watchlog.core.errors import LauncherError
from watchlog.core.settings import Settings
from watchlog.launcher.procs import BUS_OFFSET, free_redis_ports
from watchlog.launcher.redis.cluster import LocalCluster
from watchlog.launcher.redis.conf import EXPORTER_USER
from watchlog.launcher.services import Ports
from watchlog.launcher.stack import Stack


@pytest.fixture(autouse=True)
def _redis_server() -> None:
    """The Redis ACL and launcher proofs need redis-server: missing, the run fails."""
    require_tool("redis-server")

TAG = "{p00.ee0}"  # one hash tag: every key below lives in one slot
BUSY_LOOP = "while true do end"


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
    app.hset(key, mapping={"a": "1", "b": "2"})
    node = app.get_node_from_key(key)
    pipe = app.get_redis_connection(node).pipeline(transaction=False)
    # The functions `start` loaded as admin (the app user cannot load any).
    pipe.execute_command("FCALL", "wl_bodies", 1, key, 1, "a")
    pipe.execute_command("FCALL_RO", "wl_bodies", 1, key, 1, "b")
    pipe.execute_command("WAIT", 0, 50)
    assert pipe.execute() == [["1"], ["2"], 0]
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
    # No code of its own (a busy loop blocked a master for 8 s), no loading, no erasing.
    ("EVAL", BUSY_LOOP, 0), ("SCRIPT", "LOAD", BUSY_LOOP), ("EVALSHA", "0" * 40, 0),
    ("FUNCTION", "LOAD", f"#!lua name=x\nredis.register_function('x', function() {BUSY_LOOP} end)"),
    ("FUNCTION", "FLUSH"), ("FUNCTION", "DELETE", "watchlog"), ("FUNCTION", "KILL"),
    ("DEL", f"wl:{TAG}:t:1:20261127"), ("UNLINK", f"wl:{TAG}:t:1:20261127"),
    ("RENAME", f"wl:{TAG}:t:1:20261127", f"wl:{TAG}:x"), ("FLUSHALL", "ASYNC"),
    ("GETDEL", f"wl:{TAG}:x"), ("RESTORE", f"wl:{TAG}:x", 0, "x"),
    # CLIENT PAUSE stalled a master 10 s; KILL dropped replication links; LIST shows peers.
    ("CLIENT", "PAUSE", 10000, "ALL"), ("CLIENT", "KILL", "TYPE", "replica"),
    ("CLIENT", "LIST"), ("CLIENT", "UNBLOCK", 1), ("CLIENT", "NO-EVICT", "on"),
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
    from helpers import seed_log, to_events
    from watchlog.store import Store

    app.set(f"wl:{TAG}:kept", "yes")
    # Function writes reach the AOF inside MULTI/EXEC, replayed as the default user on start.
    store = Store(Settings(redis_url=rcluster.startup_urls, redis_username="watchlog",
                           redis_password=rcluster.credentials.redis_app_password))
    event = to_events([seed_log()])[0]
    assert store.ingest([event]) == [True]
    store.close()
    rcluster.stop()
    assert all(n.role == "down" for n in rcluster.nodes())
    rcluster.start()
    app.nodes_manager.initialize()
    assert app.get(f"wl:{TAG}:kept") == "yes"
    store = Store(Settings(redis_url=rcluster.startup_urls, redis_username="watchlog",
                           redis_password=rcluster.credentials.redis_app_password))
    assert store.ingest([event]) == [False]  # the library came back with the data
    assert store.fleet_day(event.day)[1]["running"]["n"] == 1
    store.close()
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


def loose_modes(root: Path) -> dict[str, int]:
    """Return every file and folder under ``root`` (root included) that group or others may
    read, write or enter, with its mode."""
    found = {}
    for path in [root, *root.rglob("*")]:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # a temporary file of a rewrite, gone meanwhile
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            found[str(path.relative_to(root))] = stat.S_IMODE(st.st_mode)
    return found


def process_umask(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"no Umask in /proc/{pid}/status")


def persist_everything(cluster: LocalCluster) -> None:
    """BGSAVE and BGREWRITEAOF on every node, then wait until both are done."""
    for port in cluster.ports:
        node = cluster.node_client(port, timeout=5.0)
        node.bgsave(schedule=True)
        node.bgrewriteaof()
    deadline = time.monotonic() + 60
    busy = ("rdb_bgsave_in_progress", "aof_rewrite_in_progress", "aof_rewrite_scheduled")
    for port in cluster.ports:
        node = cluster.node_client(port, timeout=5.0)
        while any(node.info("persistence")[k] for k in busy):
            assert time.monotonic() < deadline, f"node {port} still persisting"
            time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("mask", [0o077, 0o022], ids=["umask_077", "negative_control_022"])
def test_state_dir_is_private_to_its_owner(tmp_path: Path, mask: int) -> None:
    """`watchlog up --detach` with replicas, monitoring and clients: after logs are written and
    every node has saved an RDB and rewritten its AOF, nothing under the state directory is
    open to group or others, and every process runs with umask 077. Negative control: with
    the launcher's umask at 022 the same walk finds world-readable Redis data."""
    import httpx
    from rich.console import Console

    from helpers import seed_log

    state = tmp_path / "state"
    ports = free_redis_ports("127.0.0.1", 7)
    stack = Stack(Settings(host="127.0.0.1"), state, replicas=1, redis_port=None,
                  ports=Ports(*ports), mask=mask, console=Console(quiet=True))
    try:
        stack.up(detach=True)
        creds = load_or_create(state)
        with httpx.Client(timeout=10) as http:
            r = http.post(f"http://127.0.0.1:{ports[0]}/v1/activities",
                          json=[seed_log(user_id=f"u{i}", duration=i) for i in range(50)],
                          headers={"Authorization": f"Bearer {creds.ingest_token}"})
            assert r.status_code == 200 and r.json()["created"] == 50
        assert stack.cluster is not None
        persist_everything(stack.cluster)
        started = {s.name: s.pid for s in stack.services}
        started.update({f"node-{p}": stack.cluster.pid(p) for p in stack.cluster.ports})
        umasks = {name: process_umask(pid) for name, pid in started.items() if pid}
        running = loose_modes(state)
    finally:
        stack.down()
    stopped = loose_modes(state)
    data = [p for p in state.rglob("*") if p.name == "dump.rdb" or p.parent.name ==
            "appendonlydir"]
    assert len(data) >= 6 and (state / "logs" / "producer.log").exists()
    assert {"producer", "consumer", "simulator", "extractor"} <= umasks.keys()
    assert {"prometheus", "redis-exporter"} <= umasks.keys(), \
        "apt-get install prometheus prometheus-redis-exporter"
    assert len([n for n in umasks if n.startswith("node-")]) == 6
    if mask == 0o077:
        assert running == {} and stopped == {}
        assert set(umasks.values()) == {0o077}, umasks
    else:
        world = [p for p, m in {**running, **stopped}.items() if m & stat.S_IROTH]
        assert any(p.endswith("dump.rdb") for p in world), world
        # `watchlog extract` writes personal data and sets umask 077 itself, by design.
        assert {m for n, m in umasks.items() if n != "extractor"} == {0o022}


def test_make_private_tightens_what_an_older_launcher_left(tmp_path: Path) -> None:
    """`up` first clears group/other bits of an existing state directory (left 0755/0644 by a
    version without the umask); a symlink is left alone (chmod would follow it)."""
    from watchlog.launcher.procs import make_private

    state = tmp_path / "state"
    (state / "redis" / "7000" / "appendonlydir").mkdir(parents=True)
    aof = state / "redis" / "7000" / "appendonlydir" / "appendonly.aof.1.incr.aof"
    aof.write_text("*1\r\n")
    outside = tmp_path / "outside"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (state / "link").symlink_to(outside)
    for path in (state, state / "redis", state / "redis" / "7000", aof.parent):
        path.chmod(0o755)
    aof.chmod(0o644)
    assert len(loose_modes(state)) == 5
    make_private(state)
    assert loose_modes(state) == {}
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644


@pytest.mark.parametrize("guard", [0, 1])
def test_restarted_nodes_keep_the_clusters_replica_guard(tmp_path: Path, guard: int) -> None:
    """`chaos restart` rebuilds the cluster from its state: the available policy (no
    min-replicas guard) must not turn into the guarded one on a restarted node."""
    creds = load_or_create(tmp_path)
    c = LocalCluster(tmp_path, base_port=None, replicas=1, min_replicas=guard, credentials=creds)
    c.root.mkdir(parents=True)
    c._save_layout()
    again = LocalCluster.from_state(tmp_path, creds)
    assert again is not None and again.min_replicas == guard


def test_runaway_function_is_killable_by_the_admin(rcluster: LocalCluster) -> None:
    """busy-reply-threshold: a function running past 1 s answers others BUSY, and the admin
    user's FUNCTION KILL stops it (the apps' user may not: FUNCTION is refused to it)."""
    import threading

    port = rcluster.ports[0]
    admin = rcluster.node_client(port, timeout=10)
    admin.execute_command("FUNCTION", "LOAD", "REPLACE", "#!lua name=runaway\n"
                          "redis.register_function{function_name='spin', flags={'no-writes'},"
                          " callback=function() while true do end end}")
    errors: list[Exception] = []

    def spin() -> None:
        try:
            rcluster.node_client(port, timeout=30).execute_command("FCALL", "spin", 0)
        except redis.RedisError as e:
            errors.append(e)

    t = threading.Thread(target=spin)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                admin.execute_command("FUNCTION", "KILL")
                break
            except redis.exceptions.ResponseError as e:  # NOTBUSY until it runs, BUSY past 1 s
                assert time.monotonic() < deadline, e
                time.sleep(0.2)
    finally:
        t.join(15)
        admin.execute_command("FUNCTION", "DELETE", "runaway")
    assert errors and "killed" in str(errors[0]).lower()
    assert admin.ping()
