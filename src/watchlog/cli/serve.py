"""``watchlog serve``: one API under granian (default) or gunicorn, never Flask's debug server.

Both run ``WATCHLOG_WORKERS`` processes of ``WATCHLOG_THREADS`` request threads: a request
that sleeps (injected delay, a slow Redis) ties up one thread, not a whole process.
granian parses HTTP and queues requests in Rust, outside the GIL; the choice, measured, is
in docs/benchmarks.md. Metrics use prometheus_client's multiprocess mode; a dead worker's
live gauges are dropped by its replacement (granian) or in ``child_exit`` (gunicorn).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from flask import Flask
from gunicorn.app.base import BaseApplication

from watchlog.core import metrics
from watchlog.core.logs import configure_logging
from watchlog.core.settings import Settings

if TYPE_CHECKING:
    from granian.server import MPServer, MTServer
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker


class GunicornServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn, configured from a dict, serving the app a factory returns."""

    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for k, v in self.options.items():
            self.cfg.set(k, v)

    def load(self) -> Flask:
        return self.factory()


def producer_app() -> Flask:
    """The producer as a granian worker loads it (the factory runs in each worker)."""
    from watchlog.api.producer.app import create_app

    return _worker_app("producer", create_app)


def consumer_app() -> Flask:
    from watchlog.api.consumer.app import create_app

    return _worker_app("consumer", create_app)


def _worker_app(service: str, create_app: Callable[[Settings], Flask]) -> Flask:
    settings = Settings.from_env()
    configure_logging(settings.log_level, service)  # granian configured its own at fork
    metrics.forget_dead_workers()
    return create_app(settings)


def granian_server(service: str, settings: Settings, port: int,
                   target: str = "") -> MPServer | MTServer:
    """Return granian serving ``service``'s app (or the WSGI app at ``target``)."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    return Granian(
        target or f"{__name__}:{service}_app", factory=not target, interface=Interfaces.WSGI,
        address=settings.host, port=port, workers=settings.workers,
        blocking_threads=settings.threads, respawn_failed_workers=True,
        workers_kill_timeout=settings.request_timeout,
        # a client gets 10 s to send its headers (slow-loris bound); bodies are bounded
        # by WATCHLOG_MAX_BODY_BYTES and in time by web/bodies.py in the apps. 64 KiB of
        # buffer (headers in all; a response's write-ahead, which a slow reader's stream
        # must drain before its send deadline is checked again: docs/security.md)
        http1_settings=HTTP1Settings(header_read_timeout=10_000, max_buffer_size=65536),
        log_level=LogLevels(settings.log_level.lower()), log_access=False,
        # granian's own messages go to the root logger, in our JSON format
        log_dictconfig={"loggers": {"_granian": {"handlers": [], "propagate": True}}},
    )


def _child_exit(_server: Arbiter, worker: Worker) -> None:
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
@click.option("--reuse-port", is_flag=True,
              help="Start even if a server already listens on the port (the kernel then "
              "shares connections between them, where both allow it).")
def serve(service: str, port: int | None, reuse_port: bool) -> None:
    """Run the producer or consumer API under granian or gunicorn (WATCHLOG_SERVER)."""
    from watchlog.launcher.procs import port_free

    settings = Settings.from_env()
    configure_logging(settings.log_level, service)
    port = port or (settings.producer_port if service == "producer" else settings.consumer_port)
    if not reuse_port and not port_free(settings.host, port):
        # granian binds with SO_REUSEPORT: without this check a second server would start
        # silently beside the first and take half its connections.
        raise click.ClickException(
            f"port {port} on {settings.host} is already in use (is the stack running? see "
            f"`watchlog status`); choose another with --port or WATCHLOG_"
            f"{service.upper()}_PORT, or pass --reuse-port to share it")
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"watchlog-{service}-")
    logging.getLogger(__name__).info("serving %s on %s:%s with %s", service, settings.host,
                                     port, settings.server)
    if settings.server == "granian":
        server = granian_server(service, settings, port)
        configure_logging(settings.log_level, service)  # granian's dictConfig replaced ours
        server.serve()
        return
    create_app = producer_app if service == "producer" else consumer_app
    GunicornServer(create_app, gunicorn_options(settings, port)).run()
