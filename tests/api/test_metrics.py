"""Metrics: exact across worker processes, valid for promtool, no unbounded labels."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import now_ms, require_tool, seed_log
from watchlog.core.schema import iso_ms

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
    key = ("watchlog_logs_ingested_total",
           (("activity_type", "cycling"), ("result", "created"), ("service", "producer")))
    before = samples(url).get(key, 0.0)
    docs = [seed_log(activity_type="cycling", event_id=f"m{i}") for i in range(30)]
    r = httpx.post(url + "/v1/activities", json=docs, headers=ingest_headers, timeout=10)
    assert r.json()["created"] == 30
    assert samples(url)[key] - before == 30


@pytest.mark.parametrize("service", ["producer", "consumer"])
def test_every_watchlog_series_names_its_service(live_services, ingest_headers, reader_headers,
                                                 service) -> None:
    """The business metrics both APIs share (store latency, refused writes…) carry ``service``.

    Without it, ``watchlog_redis_command_duration_seconds`` of the producer and the consumer
    are one series per job only where the scrape job says which is which; the label makes the
    exposition itself say it (compose, Kubernetes, any job name).
    """
    httpx.post(live_services["producer"] + "/v1/activities", json=seed_log(),
               headers=ingest_headers, timeout=10)
    httpx.get(live_services["consumer"] + "/v1/users/7/activities", headers=reader_headers,
              timeout=10)
    got = samples(live_services[service])
    ours = {(name, labels) for name, labels in got if name.startswith("watchlog_")}
    store = [k for k in ours if k[0].startswith("watchlog_redis_command_duration_seconds")]
    assert store, "the store's latency histogram is exposed"
    unnamed = [k for k in ours if dict(k[1]).get("service") != service]
    assert not unnamed, unnamed[:5]


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

    from helpers import serve, service_env
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


# --- what every component exposes --------------------------------------------------------------


@pytest.mark.parametrize("service", ["producer", "consumer"])
def test_apis_expose_build_info_and_process_metrics_of_all_workers(live_services,
                                                                   service) -> None:
    got = samples(live_services[service])
    info = [labels for (name, labels) in got if name == "watchlog_build_info"]
    assert info and dict(info[0])["service"] == service
    assert got[("process_resident_memory_bytes", ())] > 0
    assert got[("process_cpu_seconds_total", ())] > 0
    assert got[("process_start_time_seconds", ())] > 0


def test_redis_latency_buckets_reach_past_the_socket_timeout() -> None:
    from watchlog.core import metrics

    # The client gives up after 2 s (plus retries in a failover): buckets must see that.
    assert max(metrics.REDIS_BUCKETS) >= 10


def test_consumer_metrics_name_a_bounded_set_of_extractors(live_services, reader_headers) -> None:
    """Reader-chosen names: at most MAX_LABELLED_EXTRACTORS labelled, the rest as _other."""
    from watchlog.core import metrics

    url = live_services["consumer"]
    names = [f"bound-{i:02d}" for i in range(metrics.MAX_LABELLED_EXTRACTORS + 5)]
    try:
        for name in names:
            r = httpx.put(f"{url}/v1/extractors/{name}", json={}, headers=reader_headers)
            assert r.status_code in (200, 201), r.text
        labelled = {dict(labels).get("extractor") for (n, labels) in samples(url)
                    if n == "watchlog_extraction_lag"}
        assert len(labelled) <= metrics.MAX_LABELLED_EXTRACTORS + 1
        assert "_other" in labelled
        assert ("watchlog_scrape_read_ok", (("service", "consumer"),)) in samples(url)
        ages = [v for (n, _), v in samples(url).items()
                if n == "watchlog_extraction_oldest_waiting_seconds"]
        assert ages and all(a >= 0 for a in ages)
    finally:
        for name in names:
            httpx.delete(f"{url}/v1/extractors/{name}", headers=reader_headers)


def test_unauthenticated_metrics_carry_no_health_figures(live_services, ingest_headers) -> None:
    """docs/security.md: /metrics has operational counts only, never a heart rate."""
    # Logged now, not the seed's hour ago: between 00:00 and 01:00 UTC that is yesterday, and
    # the fleet gauges count today's logs.
    docs = [seed_log(activity_type="running", event_id=f"hr{i}", timestamp=iso_ms(now_ms()))
            for i in range(5)]
    r = httpx.post(live_services["producer"] + "/v1/activities", json=docs,
                   headers=ingest_headers, timeout=10)
    assert r.status_code in (200, 201, 207), r.text
    text = httpx.get(live_services["consumer"] + "/metrics", timeout=10).text
    assert "watchlog_fleet_logs_today" in text  # the fleet gauges were read
    assert "heart" not in text.lower()


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) listening on ``port``."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]  # noqa: SIM115
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.rpartition(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                out.add(addr)
    return out


@pytest.mark.parametrize("command", ["simulate", "extract"])
@pytest.mark.parametrize("host", [None, "0.0.0.0"])
def test_client_metrics_listen_on_loopback_unless_widened(tmp_path, command, host) -> None:
    """--metrics-port alone binds 127.0.0.1; --metrics-host 0.0.0.0 (the control) widens it."""
    import os
    import sys
    import time

    from watchlog.launcher.procs import free_redis_ports
    from watchlog.launcher.services import Service

    port = free_redis_ports("127.0.0.1", 1)[0]
    args = {"simulate": ["simulate", "--url", "http://127.0.0.1:9", "--rate", "1", "--quiet",
                         "--duration", "60"],
            "extract": ["extract", "--name", "probe", "--follow", "--url",
                        "http://127.0.0.1:9", "-o", str(tmp_path / "out")]}[command]
    args += ["--metrics-port", str(port)] + (["--metrics-host", host] if host else [])
    env = {**os.environ, "WATCHLOG_INGEST_TOKEN": "t", "WATCHLOG_READER_KEY": "k"}
    svc = Service(command, [sys.executable, "-m", "watchlog", *args], f"127.0.0.1:{port}",
                  "tcp", env)
    svc.start(tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        addresses = _listening(port)
        assert addresses, (tmp_path / f"{command}.log").read_text()
        wide = {"00000000", "00000000000000000000000000000000"}
        assert bool(addresses & wide) is (host == "0.0.0.0"), addresses
        if host is None:
            assert addresses == {"0100007F"}
    finally:
        svc.stop()


# --- scrape-time reads and streamed latency (in process: the app's own registry) -------------


def test_scrape_time_gauges_count_failed_reads() -> None:
    """A read that raises leaves its gauges out, reports read_ok 0 and counts the failure;
    a read that works (the control) reports read_ok 1 and counts nothing."""
    from prometheus_client import CollectorRegistry, generate_latest

    from watchlog.core import metrics

    def broken() -> list:
        raise ConnectionError("cluster down")

    def healthy() -> list:
        return [("watchlog_extraction_lag", "lag", {"extractor": "x"}, 3.0)]

    def failures() -> float:
        return metrics.SCRAPE_READ_FAILURES.labels("consumer")._value.get()

    for read, ok, counted in ((broken, 0.0, 1.0), (healthy, 1.0, 0.0)):
        before = failures()
        registry = CollectorRegistry()
        registry.register(metrics.ScrapeTimeGauges(read))  # type: ignore[arg-type]
        text = generate_latest(registry).decode()
        assert f'watchlog_scrape_read_ok{{service="consumer"}} {ok}' in text
        assert ("watchlog_extraction_lag" in text) is (read is healthy)
        assert failures() - before == counted


def test_export_latency_is_observed_at_the_last_byte(producer, consumer, ingest_headers,
                                                     reader_headers) -> None:
    """A streamed export is timed when its body is finished, not when its headers leave;
    a plain JSON route (the control) is timed before the client reads anything."""
    from prometheus_client import REGISTRY

    def count(route: str) -> float:
        value = REGISTRY.get_sample_value(
            "watchlog_http_request_duration_seconds_count",
            {"service": "consumer", "route": route, "method": "GET"})
        return value or 0.0

    docs = [seed_log(event_id=f"x{i}") for i in range(20)]
    assert producer.post("/v1/activities", json=docs, headers=ingest_headers).status_code \
        in (200, 201, 207)
    route = "/v1/activities/export"
    before = count(route)
    r = consumer.get(route + "?format=ndjson", headers=reader_headers, buffered=False)
    assert r.status_code == 200 and r.is_streamed
    assert count(route) == before  # headers sent, body not yet read: not timed yet
    body = b"".join(r.response)
    r.close()
    assert body.count(b"\n") == 20
    assert count(route) == before + 1
    plain = "/v1/users/<user_id>/activities"
    before = count(plain)
    r = consumer.get("/v1/users/u1/activities", headers=reader_headers, buffered=False)
    assert count(plain) == before + 1
    r.close()


@pytest.mark.parametrize("route", ["/v1/activities", "/log_activity"])
def test_logs_ingested_counts_a_resend_as_a_duplicate_on_both_ingest_routes(
        producer, ingest_headers, route: str) -> None:
    """The producer's own ledger of logs, per route: a log and its resend are one created and
    one duplicate (the seed's route used to count every log it was sent as created)."""
    from prometheus_client import REGISTRY

    def counted(result: str) -> float:
        return REGISTRY.get_sample_value(
            "watchlog_logs_ingested_total",
            {"activity_type": "running", "result": result}) or 0.0

    doc = seed_log(event_id=f"resend-{route.strip('/').replace('/', '-')}")
    before = counted("created"), counted("duplicate")
    answers = [producer.post(route, json=doc, headers=ingest_headers).status_code
               for _ in range(2)]
    assert answers[0] in (200, 201) and answers[1] == 200
    assert (counted("created") - before[0], counted("duplicate") - before[1]) == (1, 1)
