"""The commands the deployments run, as processes: signals, exit codes, state on disk.

``watchlog extract --follow`` is what the consumer-client image runs, ``watchlog healthcheck``
is every compose healthcheck, ``watchlog up`` / ``status`` / ``down`` are ``make run``.
Each runs here as its own process (the venv's ``watchlog`` script) against real services,
and is stopped the way Docker or a terminal stops it: SIGTERM, Ctrl-C (SIGINT).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import (
    WATCHLOG,
    bearer,
    extracted,
    healthcheck,
    process_env,
    run,
    seed_log,
    serve,
    service_env,
    set_faults,
    simulate,
    wait_for,
)
from watchlog.core.credentials import Credentials, read_env_file
from watchlog.core.process import alive
from watchlog.launcher.procs import free_redis_ports
from watchlog.launcher.redis.cluster import LocalCluster


@contextmanager
def following(env: dict[str, Any], consumer_url: str, admin_headers: dict[str, str],
              *args: str) -> Iterator[subprocess.Popen[str]]:
    """`watchlog extract --follow ARGS`, as the consumer-client image runs it; killed if it
    is still running, and the consumer's faults reset, however the test ends."""
    proc = subprocess.Popen([WATCHLOG, "extract", "--follow", *args],
                            env=process_env({k: v for k, v in env.items() if v}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        set_faults(consumer_url, admin_headers, None)


@pytest.mark.slow
def test_extract_follow_stops_cleanly_on_sigterm_and_redelivers_only_the_unacked(
        env: dict[str, Any], consumer_url: str, admin_headers: dict[str, str],
        reader_headers: dict[str, str], tmp_path: Path) -> None:
    out, acked_log = tmp_path / "extracts", tmp_path / "acked.txt"
    metrics_port = free_redis_ports("127.0.0.1", 1)[0]
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    simulate(env, "--count", "300", "--batch", "100", "--seed", "21", "--ack-log", str(acked_log))
    # The consumer-client image's command, with a short poll and visibility for the test.
    with following(env, consumer_url, admin_headers, "--name", "reports", "-o", str(out),
                   "--metrics-port", str(metrics_port), "--interval", "0.2", "--max", "100",
                   "--visibility-timeout", "1", "--json") as proc:
        wait_for("the first 300 logs on disk", lambda: len(extracted(out)) == 300)
        assert healthcheck(metrics) == 0  # the image's HEALTHCHECK, on a live extractor
        simulate(env, "--count", "200", "--batch", "50", "--seed", "22",
                 "--ack-log", str(acked_log))
        wait_for("the next 200 (followed)", lambda: len(extracted(out)) == 500)
        wait_for("every ack", lambda: httpx.get(consumer_url + "/v1/extractors/reports",
                                                headers=reader_headers).json()["pending"] == 0)
        # From now on every ack fails before it is applied: the next logs are written to
        # disk but stay unacknowledged when the extractor is stopped.
        set_faults(consumer_url, admin_headers, {
            "abort_p": 1.0, "abort_status": 503, "abort_phase": "before", "retry_after": 0,
            "routes": ["/v1/extractors/<name>/ack"]})
        simulate(env, "--count", "100", "--batch", "100", "--seed", "23",
                 "--ack-log", str(acked_log))
        wait_for("100 more written, unacknowledged", lambda: len(extracted(out)) == 600)
        proc.send_signal(signal.SIGTERM)  # `docker stop`
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    stats = json.loads(stdout)
    assert stats["written"] == 600 and stats["acknowledged"] == 500, stats
    assert healthcheck(metrics) == 1  # the same healthcheck sees it gone
    assert not list(out.rglob("*.tmp")), "a batch file was left half-written"
    info = httpx.get(consumer_url + "/v1/extractors/reports", headers=reader_headers).json()
    assert (info["lag"], info["pending"]) == (0, 100)
    time.sleep(1.1)  # the unacknowledged 100 are due again
    again = run(env, "extract", "--name", "reports", "-o", str(out), "--visibility-timeout",
                "1", "--json")
    # Exactly the unacknowledged 100 came back (none of the 500 acknowledged ones), and the
    # ledger kept them from being written twice.
    assert (again["skipped_duplicates"], again["written"], again["acknowledged"]) == (
        100, 0, 100), again
    ids = [d["event_id"] for d in extracted(out)]
    assert len(ids) == len(set(ids)) == 600
    assert set(ids) == set(acked_log.read_text().split())
    info = httpx.get(consumer_url + "/v1/extractors/reports", headers=reader_headers).json()
    assert (info["lag"], info["pending"]) == (0, 0)


def test_healthcheck_exit_codes_follow_the_api(cluster: LocalCluster,
                                               credentials: Credentials,
                                               live_services: dict[str, str],
                                               tmp_path: Path) -> None:
    for service in ("producer", "consumer"):  # what the compose healthchecks call
        assert healthcheck(live_services[service] + "/ready") == 0
        assert healthcheck(live_services[service] + "/no-such-page") == 1  # 404: not healthy
    port = free_redis_ports("127.0.0.1", 1)[0]
    api = serve("consumer", service_env(cluster, credentials), port, tmp_path,
                tmp_path / "metrics")
    url = f"http://127.0.0.1:{port}/ready"
    try:
        assert healthcheck(url) == 0
    finally:
        api.stop()
    assert healthcheck(url) == 1  # dead API: connection refused


# -- watchlog up / status / down -----------------------------------------------------------


def status(state: Path) -> list[dict[str, Any]]:
    r = subprocess.run([WATCHLOG, "status", "--json", "--state-dir", str(state)],
                       capture_output=True, text=True, timeout=60, env=process_env({}))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def all_running(state: Path, expected: set[str]) -> list[dict[str, Any]] | None:
    rows = status(state)
    names = {r["component"] for r in rows}
    if expected <= names and all(r["state"] == "running" for r in rows):
        return rows
    return None


@pytest.fixture
def up_args(tmp_path: Path) -> Iterator[tuple[Path, list[str], dict[str, int]]]:
    """A state dir, `watchlog up` options on free ports, and `down` run at the end anyway."""
    state = tmp_path / "state"
    p = free_redis_ports("127.0.0.1", 10)
    ports = {"redis": p[0], "producer": p[1], "consumer": p[2], "prometheus": p[3],
             "exporter": p[4], "simulator": p[5], "extractor": p[6], "grafana": p[7],
             "alertmanager": p[8], "alert-sink": p[9]}
    args = ["--state-dir", str(state), "--nodes", "1", "--redis-port", str(ports["redis"]),
            *(x for name in ("producer", "consumer", "prometheus", "exporter", "simulator",
                             "extractor", "grafana", "alertmanager", "alert-sink")
              for x in (f"--{name}-port", str(ports[name])))]
    yield state, args, ports
    subprocess.run([WATCHLOG, "down", "--state-dir", str(state)], capture_output=True,
                   timeout=120, env=process_env({}))


def pids_of(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {r["component"]: r["pid"] for r in rows if r["pid"]}


@pytest.mark.slow
def test_up_foreground_ctrl_c_stops_everything_and_up_again_reuses_the_data(
        up_args: tuple[Path, list[str], dict[str, int]]) -> None:
    state, args, ports = up_args
    producer = f"http://127.0.0.1:{ports['producer']}"
    consumer = f"http://127.0.0.1:{ports['consumer']}"
    expected = {f"redis-{ports['redis']}", "producer", "consumer", "simulator", "extractor",
                "prometheus", "redis-exporter", "alertmanager", "alert-sink"}
    env = process_env({})
    log = (state.parent / "up.log").open("w")
    # Its own process group, as a terminal's foreground job: Ctrl-C signals the whole group.
    up = subprocess.Popen([WATCHLOG, "up", *args], env=env, stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rows = wait_for("every component running", lambda: all_running(state, expected), 120)
        pids = pids_of(rows)
        assert set(pids) == expected and all(alive(pid) for pid in pids.values())
        creds = read_env_file(state / "credentials.env")
        docs = [seed_log(user_id="reuse-1", event_id=f"reuse-{i}") for i in range(20)]
        r = httpx.post(producer + "/v1/activities", json=docs,
                       headers=bearer(creds["WATCHLOG_INGEST_TOKEN"]), timeout=30)
        assert r.status_code == 200 and r.json()["created"] == 20
        reader = bearer(creds["WATCHLOG_READER_KEY"])

        def stored() -> int:
            page = httpx.get(consumer + "/v1/users/reuse-1/activities?limit=100",
                             headers=reader, timeout=30).json()
            return len(page["items"])

        assert stored() == 20
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C
        assert up.wait(timeout=120) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        log.close()
    said = (state.parent / "up.log").read_text()
    assert "stopping" in said and "Traceback" not in said, said
    # Everything it started is gone (each was alive above), and nothing claims to run.
    assert [c for c, pid in pids.items() if alive(pid)] == []
    assert not (state / "pids.json").exists()
    assert {r["state"] for r in status(state)} == {"stopped"}
    # Again, detached this time: the same data is there.
    again = subprocess.run([WATCHLOG, "up", "--detach", *args], env=env, capture_output=True,
                           text=True, timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "running in the background" in again.stdout
    rows = wait_for("every component running again", lambda: all_running(state, expected))
    assert stored() == 20  # written before the restart, still readable
    assert read_env_file(state / "credentials.env") == creds  # same credentials reused
    table = subprocess.run([WATCHLOG, "status", "--state-dir", str(state)], capture_output=True,
                           text=True, timeout=60, env=env)
    assert table.returncode == 0 and "producer" in table.stdout and "running" in table.stdout
    pids = pids_of(rows)
    down = subprocess.run([WATCHLOG, "down", "--state-dir", str(state)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert down.returncode == 0, down.stderr
    stopped = down.stdout.removeprefix("stopped: ").strip().split(", ")
    assert set(stopped) == expected
    assert [c for c, pid in pids.items() if alive(pid)] == []
    assert {r["state"] for r in status(state)} == {"stopped"}
    nothing = subprocess.run([WATCHLOG, "down", "--state-dir", str(state)],
                             capture_output=True, text=True, timeout=60, env=env)
    assert nothing.returncode == 0 and "nothing was running" in nothing.stdout


def refused_batch_calls(consumer_url: str) -> float:
    """Batch calls the consumer refused with an injected 503 (all workers)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(consumer_url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "watchlog_http_requests_total"
               and s.labels.get("route") == "/v1/extractors/<name>/batches"
               and s.labels.get("status") == "503")


@pytest.mark.slow
def test_extract_follow_stops_during_a_retry_wait(env: dict[str, Any], consumer_url: str,
                                                  admin_headers: dict[str, str],
                                                  tmp_path: Path) -> None:
    """SIGTERM while the client waits out a Retry-After: no further request, exit 0."""
    set_faults(consumer_url, admin_headers, {
        "abort_p": 1.0, "abort_status": 503, "retry_after": 2,
        "routes": ["/v1/extractors/<name>/batches"]})
    with following(env, consumer_url, admin_headers, "--name", "waits",
                   "-o", str(tmp_path / "x"), "--interval", "0.2", "--json") as proc:
        start = refused_batch_calls(consumer_url)
        # Control: left alone, it does retry (each 2 s, as the server asks).
        wait_for("two retries", lambda: refused_batch_calls(consumer_url) >= start + 3)
        at_signal = refused_batch_calls(consumer_url)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["batches"] == 0
    # At most the call already on the wire when the signal came; no retry after it.
    assert refused_batch_calls(consumer_url) - at_signal <= 1
