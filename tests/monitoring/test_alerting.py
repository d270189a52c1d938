"""Alerting on a live stack: real Redis, redis_exporter, Prometheus, Alertmanager, alert sink.

The stack is built from the launcher's own service definitions (``watchlog.launcher
.observability``): 3 masters with a replica each, both APIs as ``watchlog serve`` runs them,
redis_exporter, Prometheus, Alertmanager and the alert sink. Test-only changes, in copies: the
alert rules' ``for:`` windows are shortened to 5 s (and the stalled-extraction age from 5
minutes to 5 s), and Alertmanager's grouping waits to a second. The shipped files are not
touched. Faults are real: Redis nodes are SIGKILLed and restarted (a master with its replica:
unserved slots; a master alone: a failover), the exporter is SIGSTOPped and continued, an
extractor stops taking batches. What arrives is read back through ``watchlog alerts``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from helpers import bearer, seed_log, serve, service_env
from watchlog.cli.alerts import AlertLog, alerts
from watchlog.core.credentials import Credentials, load_or_create
from watchlog.launcher.monitoring import monitoring_root
from watchlog.launcher.observability import (
    alert_sink_service,
    alertmanager_service,
    exporter_service,
    prometheus_service,
)
from watchlog.launcher.procs import free_redis_ports
from watchlog.launcher.redis.cluster import LocalCluster
from watchlog.launcher.services import Ports, Service

FAST = {"group_wait": "1s", "group_interval": "2s", "repeat_interval": "1h"}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def _wait(what: str, check: Callable[[], Any], timeout: float = 120.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            print(f"{time.strftime('%X')} {what}", flush=True)
            return got
        time.sleep(1.0)
    pytest.fail(f"timed out waiting for {what}")


# The shipped threshold of WatchlogExtractionStalled (oldest waiting log older than 5 minutes),
# and the test's: a test cannot wait 5 minutes.
STALLED_SHIPPED, STALLED_TEST = "(watchlog_extraction_oldest_waiting_seconds[1m])) > 300", \
    "(watchlog_extraction_oldest_waiting_seconds[10s])) > 5"


def _fast_rules(target: Path) -> Path:
    """Copy the shipped rules with every ``for:`` shortened to 5 s."""
    target.mkdir(parents=True, exist_ok=True)
    for path in (monitoring_root() / "prometheus" / "rules").glob("*.yml"):
        text = re.sub(r"(\n\s+for:) \S+", r"\1 5s", path.read_text())
        if path.name == "alerts.yml":
            assert STALLED_SHIPPED in text, "the stalled-extraction threshold moved"
            text = text.replace(STALLED_SHIPPED, STALLED_TEST)
        (target / path.name).write_text(text)
    return target


# --- the exporter's password (docs/security.md) -------------------------------------------------


class _Listener:
    """A TCP port that records what connecting clients send (an attacker's 'Redis')."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.received = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                while chunk := conn.recv(4096):
                    self.received += chunk
                    conn.sendall(b"-ERR not redis\r\n")
            except OSError:
                pass
            finally:
                conn.close()


@pytest.mark.parametrize("mode", ["password-file", "password-env"])
def test_exporter_gives_its_password_to_the_clusters_nodes_only(
        mode: str, cluster: LocalCluster, credentials: Credentials, tmp_path: Path) -> None:
    """`/scrape?target=` of a foreign port gets no password; the cluster's nodes still do.

    Negative control (``password-env``): the exporter as it ran before, with REDIS_PASSWORD,
    sends ``AUTH exporter <password>`` to any target it is given.
    """
    port = free_redis_ports("127.0.0.1", 1)[0]
    nodes = [f"127.0.0.1:{p}" for p in cluster.ports]
    made = exporter_service(tmp_path, "127.0.0.1", Ports(exporter=port), credentials, nodes)
    assert isinstance(made, Service), made
    assert made.address == f"127.0.0.1:{port}"  # loopback, whatever WATCHLOG_HOST says
    if mode == "password-env":
        made.argv = [a for a in made.argv if not a.startswith("--redis.password-file")]
        made.env["REDIS_PASSWORD"] = credentials.redis_exporter_password
    attacker = _Listener()
    made.start(tmp_path)
    try:
        made.wait_ready(20, tmp_path)
        base = f"http://{made.address}/scrape?target="
        with urllib.request.urlopen(base + f"redis://{nodes[0]}", timeout=20) as r:
            assert "redis_up 1" in r.read().decode()
        with urllib.request.urlopen(base + f"redis://127.0.0.1:{attacker.port}", timeout=20):
            pass
        leaked = credentials.redis_exporter_password.encode() in attacker.received
        assert leaked is (mode == "password-env"), attacker.received[:200]
    finally:
        made.stop()
        attacker.sock.close()
    if mode == "password-file":
        passwords = tmp_path / "exporter" / "passwords.json"
        assert passwords.stat().st_mode & 0o777 == 0o600
        assert credentials.redis_exporter_password not in " ".join(made.argv)


# --- the alert sink -----------------------------------------------------------------------------


def test_alert_sink_keeps_recent_alerts_and_the_heartbeat_apart(tmp_path: Path) -> None:
    log = AlertLog(tmp_path / "alerts.jsonl", keep=3)
    firing = {"receiver": "watchlog", "alerts": [
        {"status": "firing", "labels": {"alertname": f"A{i}", "severity": "warning"},
         "annotations": {"summary": "s"}} for i in range(5)]}
    assert log.add(firing) == 5
    assert [a["alertname"] for a in log.read_all()] == ["A2", "A3", "A4"]
    assert log.heartbeat() is None
    log.add({"alerts": [{"status": "firing", "labels": {"alertname": "Watchdog"}}]})
    assert log.heartbeat() is not None
    assert [a["alertname"] for a in log.read_all()] == ["A2", "A3", "A4"]
    assert (tmp_path / "alerts.jsonl").stat().st_mode & 0o777 == 0o600


@contextmanager
def _sink(tmp_path: Path) -> Iterator[Service]:
    """A live `watchlog alert-sink` whose bearer token is "right"."""
    (tmp_path / "token").write_text("right\n")
    port = free_redis_ports("127.0.0.1", 1)[0]
    sink = alert_sink_service(tmp_path, Ports(alert_sink=port))
    sink.argv[sink.argv.index("--token-file") + 1] = str(tmp_path / "token")
    sink.start(tmp_path)
    try:
        sink.wait_ready(20, tmp_path)
        yield sink
    finally:
        sink.stop()


@pytest.mark.parametrize("authorization, status", [(None, 401), ("Bearer wrong", 401),
                                                    ("Bearer right", 200)])
def test_alert_sink_takes_notifications_only_with_its_token(
        tmp_path: Path, authorization: str | None, status: int) -> None:
    with _sink(tmp_path) as sink:
        body = json.dumps({"alerts": [{"status": "firing",
                                       "labels": {"alertname": "X"}}]}).encode()
        request = urllib.request.Request(f"http://{sink.address}/webhook", data=body,
                                         method="POST")
        if authorization:
            request.add_header("Authorization", authorization)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                got = r.status
        except urllib.error.HTTPError as e:
            got = e.code
        assert got == status
        items = _get(f"http://{sink.address}/alerts")["items"]
        assert len(items) == (1 if status == 200 else 0)


def test_alerts_check_exits_non_zero_until_the_heartbeat_arrives(tmp_path: Path) -> None:
    """`watchlog alerts --check`: 1 while no Watchdog heartbeat came, 0 once it has.

    Negative control: without ``--check`` the same call exits 0 with no heartbeat.
    """
    with _sink(tmp_path) as sink:
        url = f"http://{sink.address}"
        assert CliRunner().invoke(alerts, ["--url", url]).exit_code == 0
        assert CliRunner().invoke(alerts, ["--url", url, "--check"]).exit_code == 1
        body = json.dumps({"alerts": [{"status": "firing",
                                       "labels": {"alertname": "Watchdog"}}]}).encode()
        request = urllib.request.Request(f"{url}/webhook", data=body, method="POST",
                                         headers={"Authorization": "Bearer right"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200
        assert CliRunner().invoke(alerts, ["--url", url, "--check"]).exit_code == 0


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alerting_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    for binary in ("prometheus", "prometheus-alertmanager", "prometheus-redis-exporter"):
        if shutil.which(binary) is None and shutil.which(binary.removeprefix("prometheus-")) \
                is None:
            pytest.fail(f"{binary} not found: apt-get install {binary}")
    state = tmp_path_factory.mktemp("alerting")
    creds = load_or_create(state)
    cluster = LocalCluster(state, base_port=None, masters=3, replicas=1, credentials=creds)
    cluster.start()
    free = free_redis_ports("127.0.0.1", 9, avoid=cluster.ports)
    ports = Ports(*free)
    nodes = [f"127.0.0.1:{p}" for p in cluster.ports]
    services: list[Service] = []
    try:
        env = service_env(cluster, creds)
        for api in ("producer", "consumer"):
            services.append(serve(api, env, getattr(ports, api), state, state / f"m-{api}"))
        for made in (exporter_service(state, "127.0.0.1", ports, creds, nodes),
                     alert_sink_service(state, ports),
                     alertmanager_service(state, ports, timing=FAST),
                     prometheus_service(state, "127.0.0.1", ports, nodes, set(),
                                        rules_dir=_fast_rules(state / "rules"))):
            assert isinstance(made, Service), made
            if made.name == "prometheus":
                # Test-only: an alert whose first send failed is sent again after 5 s, not
                # Prometheus's default minute.
                made.argv.append("--rules.alert.resend-delay=5s")
            made.start(state)
            made.wait_ready(60, state)  # Alertmanager is up before Prometheus sends to it
            services.append(made)
        by_name = {s.name: s for s in services}
        yield {"cluster": cluster, "services": by_name, "state": state, "credentials": creds,
               "producer": f"http://{by_name['producer'].address}",
               "consumer": f"http://{by_name['consumer'].address}",
               "prometheus": f"http://{by_name['prometheus'].address}",
               "alertmanager": f"http://{by_name['alertmanager'].address}",
               "sink": f"http://{by_name['alert-sink'].address}"}
    finally:
        for s in reversed(services):
            s.stop()
        cluster.stop()


def _received(stack: dict[str, Any]) -> list[dict[str, Any]]:
    """The notifications as `watchlog alerts --json` prints them."""
    result = CliRunner().invoke(alerts, ["--url", stack["sink"], "--limit", "500", "--json"])
    assert result.exit_code == 0, result.output
    return list(json.loads(result.output)["items"])


def _firing_in_prometheus(stack: dict[str, Any], name: str) -> list[dict[str, Any]]:
    got = _get(stack["prometheus"] + "/api/v1/alerts")["data"]["alerts"]
    return [a for a in got if a["labels"]["alertname"] == name and a["state"] == "firing"]


def _arrived(stack: dict[str, Any], name: str, status: str,
             instance: str | None = None) -> list[dict[str, Any]]:
    return [a for a in _received(stack) if a["alertname"] == name and a["status"] == status
            and (instance is None or a["labels"].get("instance") == instance)]


def _masters(cluster: LocalCluster) -> list[int]:
    return [n.port for n in cluster.nodes() if n.role == "master"]


def _replica_of(cluster: LocalCluster, master: int) -> int:
    info = cluster.node_client(master).info("replication")
    assert info["connected_slaves"] == 1, info
    return int(info["slave0"]["port"])


@pytest.mark.slow
def test_killed_node_is_delivered_as_redis_node_down_and_resolves(
        alerting_stack: dict[str, Any]) -> None:
    stack = alerting_stack
    cluster: LocalCluster = stack["cluster"]
    _wait("every Redis target up", lambda: len([
        t for t in _get(stack["prometheus"] + "/api/v1/targets")["data"]["activeTargets"]
        if t["labels"]["job"] == "redis" and t["health"] == "up"]) == 6)
    assert _wait("the Watchdog heartbeat at the sink",
                 lambda: _get(stack["sink"] + "/alerts")["heartbeat"])
    # A master and its replica: nothing can take over, the master's slots are unserved.
    victim = _masters(cluster)[1]
    replica = _replica_of(cluster, victim)
    instance = f"127.0.0.1:{victim}"
    # Alerts of the stack's start (a target not yet scraped) may have come and gone already:
    # count only what arrives after the fault.
    exporter_pages = len(_arrived(stack, "RedisExporterDown", "firing"))
    state_pages = len(_arrived(stack, "RedisClusterStateNotOk", "firing"))
    cluster.kill(replica)
    cluster.kill(victim)
    try:
        page = _wait("RedisNodeDown at the sink",
                     lambda: _arrived(stack, "RedisNodeDown", "firing", instance))
        assert page[0]["severity"] == "critical"
        assert page[0]["runbook_url"] == "docs/runbook.md#redisnodedown"
        # The two other masters see the cluster fail (the victim's slots are unserved):
        # Prometheus fires RedisClusterStateNotOk, Alertmanager holds it back (inhibited by
        # the node-down alert that names the cause) and it never reaches the sink.
        _wait("RedisClusterStateNotOk firing in Prometheus",
              lambda: _firing_in_prometheus(stack, "RedisClusterStateNotOk"))
        held = _wait("RedisClusterStateNotOk inhibited in Alertmanager", lambda: [
            a for a in _get(stack["alertmanager"] + "/api/v2/alerts")
            if a["labels"]["alertname"] == "RedisClusterStateNotOk"
            and a["status"]["inhibitedBy"]])
        assert held
        assert len(_arrived(stack, "RedisClusterStateNotOk", "firing")) == state_pages
        assert len(_arrived(stack, "RedisExporterDown", "firing")) == exporter_pages
    finally:
        cluster.start_node(victim)
        cluster.start_node(replica)
    _wait("RedisNodeDown resolved at the sink",
          lambda: _arrived(stack, "RedisNodeDown", "resolved", instance))
    _wait("RedisClusterStateNotOk resolved in Prometheus",
          lambda: not _firing_in_prometheus(stack, "RedisClusterStateNotOk"))


@pytest.mark.slow
def test_hung_exporter_pages_as_itself_not_as_every_node(
        alerting_stack: dict[str, Any]) -> None:
    """SIGSTOP of redis_exporter: RedisExporterDown arrives; RedisNodeDown never fires."""
    stack = alerting_stack
    exporter: Service = stack["services"]["redis-exporter"]
    assert exporter.pid
    _wait("no Redis alert left from the previous test", lambda: not (
        _firing_in_prometheus(stack, "RedisNodeDown")
        or _firing_in_prometheus(stack, "RedisClusterStateNotOk")))
    before = len(_arrived(stack, "RedisNodeDown", "firing"))
    pages = len(_arrived(stack, "RedisExporterDown", "firing"))
    resolved = len(_arrived(stack, "RedisExporterDown", "resolved"))
    os.kill(exporter.pid, signal.SIGSTOP)
    try:
        page = _wait("RedisExporterDown at the sink", lambda: _arrived(
            stack, "RedisExporterDown", "firing")[pages:])
        assert page[0]["severity"] == "critical"
        # Every node scrape has failed for longer than RedisNodeDown's (shortened) `for:`.
        pending = _get(stack["prometheus"] + "/api/v1/alerts")["data"]["alerts"]
        assert not [a for a in pending if a["labels"]["alertname"] == "RedisNodeDown"]
        up = _get(stack["prometheus"] + '/api/v1/query?query=up%7Bjob%3D%22redis%22%7D')
        assert {r["value"][1] for r in up["data"]["result"]} == {"0"}
    finally:
        os.kill(exporter.pid, signal.SIGCONT)
    _wait("RedisExporterDown resolved at the sink",
          lambda: _arrived(stack, "RedisExporterDown", "resolved")[resolved:])
    assert len(_arrived(stack, "RedisNodeDown", "firing")) == before


@pytest.mark.slow
def test_failover_delivers_the_master_left_without_a_replica_and_resolves(
        alerting_stack: dict[str, Any]) -> None:
    """A killed master's replica takes over and runs alone: RedisMasterWithoutReplica arrives.

    It arrives beside RedisNodeDown of the killed node (not held back under it: nothing ties
    the promoted node to the dead one, so an inhibition would mute every shard's redundancy
    alert while any node is down), and resolves when the old master is back as the promoted
    one's replica. Negative control: with every master replicated, it is not firing before.
    """
    stack = alerting_stack
    cluster: LocalCluster = stack["cluster"]
    _wait("no node alert left from the previous test", lambda: not (
        _firing_in_prometheus(stack, "RedisNodeDown")
        or _firing_in_prometheus(stack, "RedisClusterStateNotOk")))
    _wait("every master with its replica again", lambda: all(
        cluster.node_client(m).info("replication")["connected_slaves"] == 1
        for m in _masters(cluster)), timeout=60)
    time.sleep(6)  # one scrape and one evaluation of the healed cluster
    assert not _firing_in_prometheus(stack, "RedisMasterWithoutReplica")
    victim = _masters(cluster)[0]
    promoted = f"127.0.0.1:{_replica_of(cluster, victim)}"
    resolved = len(_arrived(stack, "RedisMasterWithoutReplica", "resolved", promoted))
    cluster.kill(victim)
    try:
        page = _wait("RedisMasterWithoutReplica at the sink", lambda: _arrived(
            stack, "RedisMasterWithoutReplica", "firing", promoted))
        assert page[0]["runbook_url"] == "docs/runbook.md#redismasterwithoutreplica"
        _wait("RedisNodeDown of the killed master at the sink", lambda: _arrived(
            stack, "RedisNodeDown", "firing", f"127.0.0.1:{victim}"))
    finally:
        cluster.start_node(victim)
    _wait("RedisMasterWithoutReplica resolved at the sink", lambda: _arrived(
        stack, "RedisMasterWithoutReplica", "resolved", promoted)[resolved:])


@pytest.mark.slow
def test_stopped_extractor_pages_as_stalled_and_resolves_once_drained(
        alerting_stack: dict[str, Any]) -> None:
    """An extractor that takes no batch pages WatchlogExtractionStalled; a drained one does not.

    Ingested through the producer, read through the consumer's extraction API; the alert comes
    from the consumer's scrape-time age gauge. Negative control: ``drained`` gets the same logs
    and takes them at once, and is never named.
    """
    stack = alerting_stack
    reader = bearer(stack["credentials"].reader_key)
    ingest = bearer(stack["credentials"].ingest_token)
    with httpx.Client(base_url=stack["consumer"], headers=reader, timeout=10) as consumer:
        for name in ("stalled", "drained"):
            r = consumer.put(f"/v1/extractors/{name}", json={"start": "latest"})
            assert r.status_code == 200, r.text
        docs = [seed_log(event_id=f"stall-{i}") for i in range(20)]
        r = httpx.post(stack["producer"] + "/v1/activities", json=docs, headers=ingest,
                       timeout=10)
        assert r.json()["created"] == 20, r.text
        taken = consumer.post("/v1/extractors/drained/batches").json()["items"]
        assert len(taken) == 20
        acked = consumer.post("/v1/extractors/drained/ack",
                              json={"ids": [i["feed_id"] for i in taken]}).json()
        assert acked["acked"] == 20
        page = _wait("WatchlogExtractionStalled at the sink", lambda: [
            a for a in _arrived(stack, "WatchlogExtractionStalled", "firing")
            if a["labels"].get("extractor") == "stalled"])
        assert page[0]["runbook_url"] == "docs/runbook.md#watchlogextractionstalled"
        assert not [a for a in _received(stack) if a["alertname"] == "WatchlogExtractionStalled"
                    and a["labels"].get("extractor") == "drained"]
        taken = consumer.post("/v1/extractors/stalled/batches").json()["items"]
        consumer.post("/v1/extractors/stalled/ack", json={"ids": [i["feed_id"] for i in taken]})
        _wait("WatchlogExtractionStalled resolved at the sink", lambda: [
            a for a in _arrived(stack, "WatchlogExtractionStalled", "resolved")
            if a["labels"].get("extractor") == "stalled"])
