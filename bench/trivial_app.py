"""The ceiling of the HTTP path: a one-route Flask app under the producer's gunicorn options.

``python -m bench.trivial_app --port P [--worker-class gthread|sync]`` serves it with
``watchlog.cli.serve.gunicorn_options`` (same workers, threads, keep-alive); granian
serves the module-level ``app``. The route reads the body and answers a small JSON
document, as the producer does, but validates and stores nothing.
"""

from __future__ import annotations

from typing import Any

import click
import msgspec
from flask import Flask, Response, request
from gunicorn.app.base import BaseApplication

from watchlog.cli.serve import gunicorn_options
from watchlog.settings import Settings


def create_app() -> Flask:
    app = Flask("trivial")

    @app.route("/", methods=["GET", "POST"])
    def index() -> Response:
        n = len(request.get_data(cache=False))
        return Response(msgspec.json.encode({"status": "ok", "bytes": n}),
                        mimetype="application/json")

    return app


app = create_app()


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for k, v in self.options.items():
            self.cfg.set(k, v)

    def load(self) -> Flask:
        return app


@click.command()
@click.option("--port", type=int, required=True)
@click.option("--worker-class", default="gthread", type=click.Choice(["gthread", "sync"]))
def main(port: int, worker_class: str) -> None:
    """Serve the trivial endpoint under gunicorn."""
    options = gunicorn_options(Settings.from_env(), port)
    options.pop("child_exit", None)  # no prometheus registry here
    options["worker_class"] = worker_class
    _Server(options).run()


if __name__ == "__main__":
    main()
