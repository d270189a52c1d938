"""When the cluster is down the APIs say 503 (retry later), never 500."""

from __future__ import annotations

import pytest
from werkzeug.test import TestResponse

from helpers import json_of, seed_log
from watchlog.core.credentials import load_or_create
from watchlog.core.settings import Settings
from watchlog.launcher.redis.cluster import LocalCluster


@pytest.fixture
def doomed(tmp_path):  # noqa: ANN201
    creds = load_or_create(tmp_path)
    c = LocalCluster(tmp_path, base_port=None, masters=3, credentials=creds)
    c.start()
    settings = Settings.from_env({**creds.app_env(), "WATCHLOG_REDIS_URL": c.startup_urls,
                                  "WATCHLOG_REDIS_TIMEOUT": "0.5"})
    yield c, settings, creds
    c.stop()


def test_unavailable_cluster_turns_ready_and_writes_into_503(doomed) -> None:
    from watchlog.api.consumer.app import create_app as consumer_app
    from watchlog.api.producer.app import create_app as producer_app

    cluster, settings, creds = doomed
    producer = producer_app(settings).test_client()
    consumer = consumer_app(settings).test_client()
    ingest = {"Authorization": f"Bearer {creds.ingest_token}"}
    reader = {"Authorization": f"Bearer {creds.reader_key}"}
    assert producer.get("/ready").status_code == 200
    assert producer.post("/v1/activities", json=seed_log(), headers=ingest).status_code == 201
    cluster.stop()
    r = producer.get("/ready")
    assert r.status_code == 503 and json_of(r)["status"] == "unavailable"
    r = producer.post("/v1/activities", json=seed_log(duration=5), headers=ingest)
    assert r.status_code == 503 and json_of(r)["error"] == "store_unavailable"
    assert r.headers["Retry-After"] == "1"
    for url in ("/v1/users/7/activities", "/v1/reports/daily", "/activity_logs",
                "/v1/activities/export"):
        r = consumer.get(url, headers=reader)
        assert r.status_code == 503 and r.is_json, url
    assert consumer.get("/metrics").status_code == 200


EXTRACTOR_ROUTES = [("get", "/v1/extractors", None), ("put", "/v1/extractors/x", {}),
                    ("get", "/v1/extractors/x", None),
                    ("post", "/v1/extractors/x/batches?max=10", None),
                    ("post", "/v1/extractors/x/ack", {"ids": ["0-1-0"]}),
                    ("delete", "/v1/extractors/x", None)]


def test_extractor_routes_answer_503_with_retry_after_while_the_store_is_down(doomed) -> None:
    from watchlog.api.consumer.app import create_app as consumer_app

    cluster, settings, creds = doomed
    consumer = consumer_app(settings).test_client()
    reader = {"Authorization": f"Bearer {creds.reader_key}"}

    def call(method: str, url: str, body: object) -> TestResponse:
        return getattr(consumer, method)(url, headers=reader, json=body)

    # Control: with the store up, the same calls succeed (PUT first: x exists for the rest).
    for method, url, body in EXTRACTOR_ROUTES:
        r = call(method, url, body)
        assert r.status_code == 200, (method, url, r.json)
    cluster.stop()
    for method, url, body in EXTRACTOR_ROUTES:
        r = call(method, url, body)
        assert r.status_code == 503 and r.is_json, (method, url, r.status_code)
        assert json_of(r)["error"] == "store_unavailable" and json_of(r)["message"], (method, url)
        assert r.headers["Retry-After"] == "1", (method, url)


def test_healthcheck_turns_unhealthy_when_the_store_goes(doomed, tmp_path) -> None:
    """The compose healthcheck (`watchlog healthcheck .../ready`) on a live API: 0 while the
    cluster serves, 1 once it is gone, while the API process itself still runs."""
    from helpers import healthcheck, serve
    from watchlog.core.process import alive
    from watchlog.launcher.procs import free_redis_ports

    cluster, _, creds = doomed
    port = free_redis_ports("127.0.0.1", 1)[0]
    env = {**creds.app_env(), "WATCHLOG_REDIS_URL": cluster.startup_urls,
           "WATCHLOG_REDIS_TIMEOUT": "0.5", "WATCHLOG_WORKERS": "1"}
    api = serve("producer", env, port, tmp_path, tmp_path / "metrics")
    url = f"http://127.0.0.1:{port}/ready"
    try:
        assert healthcheck(url) == 0
        cluster.stop()
        assert healthcheck(url) == 1 and alive(api.pid)
    finally:
        api.stop()
