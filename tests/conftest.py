"""Fixtures: a real Redis Cluster started by our own launcher, on free ports, per session.

Each test that touches the cluster starts from empty masters (FLUSHALL as the admin user).
No fake or mock of Redis anywhere: the cluster is the thing under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from watchlog.launcher.credentials import Credentials, load_or_create
from watchlog.launcher.procs import free_redis_ports
from watchlog.launcher.redis_cluster import LocalCluster
from watchlog.settings import Settings
from watchlog.store import Store

CLUSTER_FIXTURES = {"cluster", "cluster_settings", "store", "producer", "consumer",
                    "producer_url", "consumer_url"}


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("watchlog-state")


@pytest.fixture(scope="session")
def credentials(state_dir: Path) -> Credentials:
    return load_or_create(state_dir)


@pytest.fixture(scope="session")
def cluster(state_dir: Path, credentials: Credentials) -> Iterator[LocalCluster]:
    c = LocalCluster(state_dir, base_port=None, masters=3, replicas=0, credentials=credentials)
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def cluster_settings(cluster: LocalCluster, credentials: Credentials,
                     state_dir: Path) -> Settings:
    env = {**credentials.app_env(), "WATCHLOG_REDIS_URL": cluster.seed_urls,
           "WATCHLOG_STATE_DIR": str(state_dir)}
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def store(cluster_settings: Settings) -> Iterator[Store]:
    s = Store(cluster_settings)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def flush(request: pytest.FixtureRequest) -> None:
    """Empty every master before a test that uses the cluster."""
    if CLUSTER_FIXTURES.isdisjoint(request.fixturenames):
        return
    cluster: LocalCluster = request.getfixturevalue("cluster")
    rc = cluster.admin_client()
    try:
        rc.flushall(target_nodes=rc.get_primaries())
        rc.execute_command("SCRIPT", "FLUSH", target_nodes=rc.get_primaries())
    finally:
        rc.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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
    from watchlog.producer.app import create_app

    return create_app(cluster_settings, store).test_client()


@pytest.fixture
def consumer(cluster_settings: Settings, store: Store):  # noqa: ANN201
    from watchlog.consumer.app import create_app

    return create_app(cluster_settings, store).test_client()


def serve(service: str, settings_env: dict[str, str], port: int, log: Path,
          multiproc: Path) -> subprocess.Popen[bytes]:
    """Start one API under gunicorn, as `watchlog serve` runs it, and wait until ready."""
    multiproc.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings_env, f"WATCHLOG_{service.upper()}_PORT": str(port),
           "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    proc = subprocess.Popen([sys.executable, "-m", "watchlog", "serve", service], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"{service} did not become ready; see {log}")


def service_env(cluster: LocalCluster, credentials: Credentials) -> dict[str, str]:
    return {**credentials.app_env(), "WATCHLOG_REDIS_URL": cluster.seed_urls,
            "WATCHLOG_WORKERS": "2", "WATCHLOG_THREADS": "4"}


@pytest.fixture(scope="session")
def live_services(cluster: LocalCluster, credentials: Credentials,
                  state_dir: Path) -> Iterator[dict[str, str]]:
    """Both APIs under gunicorn on free ports: {"producer": url, "consumer": url}."""
    ports = free_redis_ports("127.0.0.1", 2)
    env = service_env(cluster, credentials)
    procs, urls = [], {}
    for service, port in zip(("producer", "consumer"), ports, strict=True):
        procs.append(serve(service, env, port, state_dir / f"{service}.log",
                           state_dir / f"metrics-{service}"))
        urls[service] = f"http://127.0.0.1:{port}"
    yield urls
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(15)


@pytest.fixture
def producer_url(live_services: dict[str, str]) -> str:
    return live_services["producer"]


@pytest.fixture
def consumer_url(live_services: dict[str, str]) -> str:
    return live_services["consumer"]
