"""``watchlog serve``: one API under gunicorn (gthread workers), never Flask's debug server.

gthread workers: a request that sleeps (injected delay, a slow Redis) ties up one thread,
not a whole process. Metrics use prometheus_client's multiprocess mode; a dead worker's
live gauges are dropped in ``child_exit``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import click
from gunicorn.app.base import BaseApplication

from watchlog.logs import configure_logging
from watchlog.settings import Settings


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured from a dict, serving the app a factory returns."""

    def __init__(self, factory: Any, options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for k, v in self.options.items():
            self.cfg.set(k, v)

    def load(self) -> Any:
        return self.factory()


def _child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def gunicorn_options(settings: Settings, port: int) -> dict[str, Any]:
    return {
        "bind": f"{settings.host}:{port}",
        "workers": settings.workers,
        "threads": settings.threads,
        "worker_class": "gthread",
        "timeout": settings.request_timeout,
        "graceful_timeout": 10,
        "keepalive": 5,
        "limit_request_line": 8190,
        "child_exit": _child_exit,
        "accesslog": None,
        "loglevel": settings.log_level.lower(),
    }


@click.command()
@click.argument("service", type=click.Choice(["producer", "consumer"]))
@click.option("--port", type=int, default=None, help="Default: WATCHLOG_<SERVICE>_PORT.")
def serve(service: str, port: int | None) -> None:
    """Run the producer or consumer API under gunicorn."""
    settings = Settings.from_env()
    configure_logging(settings.log_level, service)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"watchlog-{service}-")
    port = port or (settings.producer_port if service == "producer" else settings.consumer_port)
    if service == "producer":
        from watchlog.producer.app import create_app
    else:
        from watchlog.consumer.app import create_app
    logging.getLogger(__name__).info("serving %s on %s:%s", service, settings.host, port)
    GunicornServer(lambda: create_app(settings), gunicorn_options(settings, port)).run()
