"""Metrics: exact across worker processes, valid for promtool, no unbounded labels."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from payloads import seed_log
from tools import require_tool

N = 200


def samples(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def health_count(url: str) -> float:
    key = ("watchlog_http_requests_total", (("injected", "false"), ("method", "GET"),
           ("route", "/health"), ("service", url_service(url)), ("status", "200")))
    return samples(url).get(key, 0.0)


def url_service(url: str) -> str:
    return httpx.get(url + "/health", timeout=5).json()["service"]


def test_metrics_count_every_request_once_across_workers(live_services) -> None:
    url = live_services["producer"]
    before = health_count(url)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: httpx.get(url + "/health", timeout=10).status_code,
                              range(N)))
    assert codes == [200] * N
    # health_count itself makes one /health call before reading /metrics
    assert health_count(url) - before == N + 1


def test_metrics_business_counters_follow_ingest(live_services, ingest_headers) -> None:
    url = live_services["producer"]
    key = ("watchlog_logs_ingested_total", (("activity_type", "cycling"), ("result", "created")))
    before = samples(url).get(key, 0.0)
    docs = [seed_log(activity_type="cycling", event_id=f"m{i}") for i in range(30)]
    r = httpx.post(url + "/v1/activities", json=docs, headers=ingest_headers, timeout=10)
    assert r.json()["created"] == 30
    assert samples(url)[key] - before == 30


@pytest.mark.parametrize("service", ["producer", "consumer"])
def test_metrics_pass_promtool_check_metrics(live_services, service) -> None:
    promtool = require_tool("promtool")
    text = httpx.get(live_services[service] + "/metrics", timeout=10).text
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        r.stdout + r.stderr


def test_metrics_labels_carry_no_ids(live_services, ingest_headers, reader_headers) -> None:
    url = live_services["producer"]
    httpx.post(url + "/v1/activities", json=seed_log(user_id="secret-user",
               device_id="secret-dev", event_id="secret-evt"), headers=ingest_headers)
    httpx.get(live_services["consumer"] + "/v1/users/secret-user/activities",
              headers=reader_headers)
    for svc in ("producer", "consumer"):
        text = httpx.get(live_services[svc] + "/metrics").text
        assert not re.search(r"secret-(user|dev|evt)", text)
        assert 'route="/v1/users/<user_id>/activities"' in text or svc == "producer"


def test_metrics_forget_a_killed_workers_live_gauges(cluster, credentials, tmp_path) -> None:
    """granian respawns a killed worker; the new one drops its predecessor's in-flight gauge."""
    import os
    import signal
    import time

    from conftest import serve, service_env
    from watchlog.launcher.procs import free_redis_ports

    port = free_redis_ports("127.0.0.1", 1)[0]
    multiproc = tmp_path / "metrics"
    svc = serve("consumer", service_env(cluster, credentials), port, tmp_path, multiproc)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(20):
            httpx.get(url + "/health", timeout=5)

        def live_pids() -> set[int]:
            return {int(m.group(1)) for f in os.listdir(multiproc)
                    if (m := re.search(r"_live\w*_(\d+)\.db$", f))}

        victim = min(live_pids())
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while victim in live_pids() and time.monotonic() < deadline:
            httpx.get(url + "/health", timeout=5)  # reaches the replacement once it is up
            time.sleep(0.2)
        assert victim not in live_pids()
        assert httpx.get(url + "/ready", timeout=5).status_code == 200
    finally:
        svc.stop()
