"""Fixtures: a real Redis Cluster started by our own launcher, on free ports, per session.

Each test that touches the cluster starts from empty masters (FLUSHALL as the admin user).
No fake or mock of Redis anywhere: the cluster is the thing under test.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import SECRETS, bearer, compose, require_tool, serve, service_env
from watchlog.core.credentials import Credentials, load_or_create
from watchlog.core.settings import Settings
from watchlog.launcher.procs import free_redis_ports
from watchlog.launcher.redis.cluster import LocalCluster
from watchlog.store import Store


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("watchlog-state")


@pytest.fixture(scope="session")
def credentials(state_dir: Path) -> Credentials:
    return load_or_create(state_dir)


@pytest.fixture(scope="session")
def cluster(state_dir: Path, credentials: Credentials) -> Iterator[LocalCluster]:
    require_tool("redis-server")
    c = LocalCluster(state_dir, base_port=None, masters=3, replicas=0, credentials=credentials)
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def cluster_settings(cluster: LocalCluster, credentials: Credentials,
                     state_dir: Path) -> Settings:
    env = {**credentials.app_env(), "WATCHLOG_REDIS_URL": cluster.startup_urls,
           "WATCHLOG_STATE_DIR": str(state_dir)}
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def store(cluster_settings: Settings) -> Iterator[Store]:
    s = Store(cluster_settings)
    yield s
    s.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``flushed`` every test that uses the session cluster, directly or through a fixture.

    The mark, not a list of fixture names, decides what ``flush`` empties: a new fixture built
    on ``cluster`` is covered without being named here, and a test may carry the mark itself.
    A module whose tests read what one module fixture ingested carries ``shared_data``
    instead, and is not emptied between its tests.
    """
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()) and \
                item.get_closest_marker("shared_data") is None:
            item.add_marker(pytest.mark.flushed)


@pytest.fixture(autouse=True)
def flush(request: pytest.FixtureRequest) -> None:
    """Empty every master before a test marked ``flushed``."""
    if request.node.get_closest_marker("flushed") is None:
        return
    cluster: LocalCluster = request.getfixturevalue("cluster")
    rc = cluster.admin_client()
    try:
        rc.flushall(target_nodes=rc.get_primaries())
        rc.execute_command("SCRIPT", "FLUSH", target_nodes=rc.get_primaries())
    finally:
        rc.close()


@pytest.fixture(scope="session")
def ingest_headers(credentials: Credentials) -> dict[str, str]:
    return bearer(credentials.ingest_token)


@pytest.fixture(scope="session")
def reader_headers(credentials: Credentials) -> dict[str, str]:
    return bearer(credentials.reader_key)


@pytest.fixture(scope="session")
def admin_headers(credentials: Credentials) -> dict[str, str]:
    return bearer(credentials.admin_key)


@pytest.fixture
def producer(cluster_settings: Settings, store: Store):  # noqa: ANN201
    from watchlog.api.producer.app import create_app

    return create_app(cluster_settings, store).test_client()


@pytest.fixture
def consumer(cluster_settings: Settings, store: Store):  # noqa: ANN201
    from watchlog.api.consumer.app import create_app

    return create_app(cluster_settings, store).test_client()


@pytest.fixture(scope="session")
def live_services(cluster: LocalCluster, credentials: Credentials,
                  state_dir: Path) -> Iterator[dict[str, str]]:
    """Both APIs on free ports: {"producer": url, "consumer": url}."""
    ports = free_redis_ports("127.0.0.1", 2)
    env = service_env(cluster, credentials)
    services, urls = [], {}
    for service, port in zip(("producer", "consumer"), ports, strict=True):
        services.append(serve(service, env, port, state_dir, state_dir / f"metrics-{service}"))
        urls[service] = f"http://127.0.0.1:{port}"
    yield urls
    for svc in services:
        svc.stop()


@pytest.fixture
def producer_url(live_services: dict[str, str]) -> str:
    return live_services["producer"]


@pytest.fixture
def consumer_url(live_services: dict[str, str]) -> str:
    return live_services["consumer"]


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The whole native system (`watchlog up --detach`) on free ports, under load.

    Returns the URLs of its components. Faults are turned on for a while, and bad and
    duplicate logs are sent, so that every dashboard panel has something to show.
    """
    from rich.console import Console

    from watchlog.launcher.services import Ports
    from watchlog.launcher.stack import Stack

    for name in ("redis-server", "prometheus", "prometheus-redis-exporter"):
        require_tool(name)  # else the stack leaves that part out and the checks mislead
    state = tmp_path_factory.mktemp("live-stack")
    free = free_redis_ports("127.0.0.1", 9)
    ports = Ports(*free)
    settings = Settings.from_env({"WATCHLOG_PRODUCER_PORT": str(free[0]),
                                  "WATCHLOG_CONSUMER_PORT": str(free[1])})
    stack = Stack(settings, state, redis_port=None, ports=ports,
                  console=Console(file=open(os.devnull, "w")))  # noqa: SIM115
    stack.up(detach=True)
    urls = {"producer": f"http://127.0.0.1:{ports.producer}",
            "consumer": f"http://127.0.0.1:{ports.consumer}",
            "prometheus": f"http://127.0.0.1:{ports.prometheus}",
            "alertmanager": f"http://127.0.0.1:{ports.alertmanager}",
            "alert_sink": f"http://127.0.0.1:{ports.alert_sink}",
            "state_dir": str(state)}
    try:
        drive_load(urls, load_or_create(state), seconds=20)
        yield urls
    finally:
        stack.down()


def drive_load(urls: dict[str, str], creds: Credentials, seconds: float) -> None:
    """Exercise every path the dashboards show: reads, faults, rejects, duplicates."""
    from helpers import seed_log

    admin, reader, ingest = (bearer(creds.admin_key), bearer(creds.reader_key),
                             bearer(creds.ingest_token))
    spec = {"delay_p": 0.2, "delay": "fixed:0.01", "abort_p": 0.15, "abort_status": 503,
            "abort_phase": "both"}
    with httpx.Client(timeout=10) as http:
        for svc in ("producer", "consumer"):
            http.put(urls[svc] + "/admin/faults", json=spec, headers=admin)
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            i += 1
            doc = seed_log(event_id=f"load-{i % 50}")  # repeats: duplicates
            http.post(urls["producer"] + "/v1/activities", json=[doc, {"bad": i}],
                      headers=ingest)
            http.get(urls["consumer"] + "/v1/users/7/activities", headers=reader)
            http.get(urls["consumer"] + "/v1/reports/daily", headers=reader)
            time.sleep(0.2)
        for svc in ("producer", "consumer"):
            http.delete(urls[svc] + "/admin/faults", headers=admin)


@pytest.fixture(scope="session")
def live_prometheus_url(live_stack: dict[str, str]) -> str:
    return live_stack["prometheus"]


@pytest.fixture
def env(cluster_settings: Settings, producer_url: str, consumer_url: str) -> dict[str, Any]:
    """The CLI's environment against the live APIs: URLs, tokens from the credentials file
    only (the test process's own WATCHLOG_* tokens unset)."""
    return {"WATCHLOG_PRODUCER_URL": producer_url, "WATCHLOG_CONSUMER_URL": consumer_url,
            "WATCHLOG_CREDENTIALS_FILE": str(Path(cluster_settings.state_dir,
                                                  "credentials.env")),
            "WATCHLOG_INGEST_TOKEN": None, "WATCHLOG_READER_KEY": None,
            "WATCHLOG_ADMIN_KEY": None}


# --- the deployment tests (tests/deploy/) ------------------------------------------------------


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compose's .env with every required secret set (test values)."""
    path = tmp_path_factory.mktemp("compose") / "test.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    return path


@pytest.fixture(scope="module")
def model(env_file: Path) -> dict[str, Any]:
    """The compose file as Compose resolves it (anchors merged, variables set), all profiles."""
    return json.loads(compose(env_file, "config", "--format", "json").stdout)
