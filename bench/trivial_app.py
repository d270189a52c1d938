"""The ceiling of the HTTP path: a one-route Flask app under the producer's server options.

``python -m bench.trivial_app --port P`` serves the module-level ``app`` exactly as
``watchlog serve`` serves the producer: the server ``WATCHLOG_SERVER`` names, with the same
workers and threads (``watchlog.cli.serve``). The route reads the body and answers a small
JSON document, as the producer does, but validates and stores nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import click
import msgspec
from flask import Flask, Response, request
from redis.cluster import RedisCluster

from watchlog.cli.serve import GunicornServer, granian_server, gunicorn_options
from watchlog.core.settings import Settings
from watchlog.store.cluster import connect


def create_app() -> Flask:
    app = Flask("trivial")

    @app.route("/", methods=["GET", "POST"])
    def index() -> Response:
        n = len(request.get_data(cache=False))
        return Response(msgspec.json.encode({"status": "ok", "bytes": n}),
                        mimetype="application/json")

    return app


app = create_app()


def serve_as_the_producer(name: str, flask_app: Flask, target: str, port: int) -> None:
    """Serve ``flask_app`` (importable as ``target``) with the producer's server settings."""
    settings = Settings.from_env()
    if settings.server == "granian":
        granian_server(name, settings, port, target=target).serve()
        return
    options = gunicorn_options(settings, port)
    options.pop("child_exit", None)  # no prometheus registry here
    GunicornServer(lambda: flask_app, options).run()


def serve_command(name: str, flask_app: Flask, target: str) -> click.Command:
    """``--port P``: serve ``flask_app`` (importable as ``target``) as the producer is served."""

    @click.command(help=f"Serve the {name} endpoint as the producer is served.")
    @click.option("--port", type=int, required=True)
    def main(port: int) -> None:
        serve_as_the_producer(name, flask_app, target, port)

    return main


def lazy_cluster() -> Callable[[], RedisCluster]:
    """A getter of one cluster client per process, made at its first use (after the server
    forks its workers), from the environment's settings."""
    state: list[RedisCluster] = []

    def client() -> RedisCluster:
        if not state:
            state.append(connect(Settings.from_env()))
        return state[0]

    return client


main = serve_command("trivial", app, "bench.trivial_app:app")


if __name__ == "__main__":
    main()
