"""The system under test: a Redis Cluster from the launcher and the services as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from bench import sysinfo
from watchlog.core.credentials import Credentials, load_or_create
from watchlog.core.settings import Settings
from watchlog.launcher.procs import free_redis_ports, spawn, terminate
from watchlog.launcher.redis.cluster import LocalCluster
from watchlog.launcher.redis.conf import ADMIN_USER

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Service:
    """One HTTP server process (a gunicorn arbiter and its workers, or granian)."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def wait_ready(self, path: str = "/ready", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    self._wait_workers(deadline)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise RuntimeError(f"{self.name} did not become ready:\n{tail}")

    def _wait_workers(self, deadline: float, workers: int = 2) -> None:
        """Wait until every worker listens: wrk's keep-alive connections, opened at once,
        would otherwise all stick to the first worker up and measure one core, not two."""
        while time.monotonic() < deadline and len(sysinfo.children(self.proc.pid)) < workers:
            time.sleep(0.1)
        time.sleep(0.5)  # a forked worker needs a moment between existing and accepting

    def stop(self) -> None:
        if self.proc.poll() is None:
            terminate(self.proc.pid, grace=15)
        self.proc.poll()  # reap it


@dataclass
class Stack:
    """A cluster, its credentials and the services started on it."""

    state: Path
    cluster: LocalCluster
    credentials: Credentials
    services: dict[str, Service] = field(default_factory=dict)

    @classmethod
    def start(cls, state: Path, masters: int = 3, replicas: int = 0) -> Stack:
        state.mkdir(parents=True, exist_ok=True)
        creds = load_or_create(state)
        cluster = LocalCluster(state, base_port=None, masters=masters, replicas=replicas,
                               credentials=creds)
        cluster.start()
        return cls(state, cluster, creds)

    def env(self, **extra: str) -> dict[str, str]:
        """Return the environment of a service on this cluster (bench rate limit)."""
        return {**os.environ, **self.credentials.app_env(),
                "WATCHLOG_REDIS_URL": self.cluster.startup_urls,
                "WATCHLOG_RATE_LIMIT": "1000000/second",
                "WATCHLOG_CONSUMER_RATE_LIMIT": "1000000/second", "WATCHLOG_LOG_LEVEL": "WARNING",
                # the bench's root first (for `bench.*`), then any path the caller set
                "PYTHONPATH": os.pathsep.join(
                    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), **extra}

    def settings(self) -> Settings:
        return Settings.from_env(self.env())

    def serve(self, name: str, argv: list[str], ready: str, **extra: str) -> Service:
        """Start a server on a free port (``{port}`` in argv); wait until ``ready`` answers."""
        port = free_redis_ports("127.0.0.1", 1)[0]
        metrics = self.state / f"metrics-{name}"
        metrics.mkdir(parents=True, exist_ok=True)
        for f in metrics.iterdir():
            f.unlink()
        env = self.env(PROMETHEUS_MULTIPROC_DIR=str(metrics), WATCHLOG_PRODUCER_PORT=str(port),
                       WATCHLOG_CONSUMER_PORT=str(port), **extra)
        log = self.state / f"{name}.log"
        proc = spawn([a.format(port=port) for a in argv], log, env=env, cwd=ROOT)
        svc = Service(name, proc, f"http://127.0.0.1:{port}", log)
        svc.wait_ready(ready)
        self.services[name] = svc
        return svc

    def serve_watchlog(self, role: str) -> Service:
        return self.serve(role, [sys.executable, "-m", "watchlog", "serve", role], "/ready")

    def serve_trivial(self, name: str, **extra: str) -> Service:
        argv = [sys.executable, "-m", "bench.trivial_app", "--port", "{port}"]
        return self.serve(name, argv, "/", **extra)

    def serve_naive(self, name: str, **extra: str) -> Service:
        """The one-command RPUSH endpoint (``bench/naive_app.py``)."""
        return self._serve_rpush(name, "bench.naive_app", **extra)

    def serve_seed(self, name: str, **extra: str) -> Service:
        """The seed's producer (``bench/seed_app.py``)."""
        return self._serve_rpush(name, "bench.seed_app", **extra)

    def _serve_rpush(self, name: str, module: str, **extra: str) -> Service:
        """An app that ``RPUSH``es, as the admin user (the apps' user may not)."""
        argv = [sys.executable, "-m", module, "--port", "{port}"]
        return self.serve(name, argv, "/", WATCHLOG_REDIS_USERNAME=ADMIN_USER,
                          WATCHLOG_REDIS_PASSWORD=self.credentials.redis_admin_password, **extra)

    def stop_service(self, name: str) -> None:
        svc = self.services.pop(name, None)
        if svc is not None:
            svc.stop()

    def stop(self) -> None:
        for name in list(self.services):
            self.stop_service(name)
        self.cluster.stop()

    def flush(self) -> None:
        """Empty every master (between the write and the read scenarios).

        A big store on a busy machine takes a while to free: a long socket timeout, and a
        master that still timed out is asked again until it is empty.
        """
        rc = self.cluster.admin_client(socket_timeout=120.0)
        try:
            for node in rc.get_primaries():
                for _ in range(5):
                    try:
                        rc.flushall(target_nodes=node)
                        break
                    except redis.exceptions.TimeoutError:
                        time.sleep(1)
        finally:
            rc.close()
