"""The ceiling of the HTTP path: a one-route Flask app under the producer's gunicorn options.

``python -m bench.trivial_app --port P [--worker-class gthread|sync]`` serves it with
``watchlog.cli.serve.gunicorn_options`` (same workers, threads, keep-alive); granian
serves the module-level ``app``. The route reads the body and answers a small JSON
document, as the producer does, but validates and stores nothing.
"""

from __future__ import annotations

import click
import msgspec
from flask import Flask, Response, request

from watchlog.cli.serve import GunicornServer, gunicorn_options
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


@click.command()
@click.option("--port", type=int, required=True)
@click.option("--worker-class", default="gthread", type=click.Choice(["gthread", "sync"]))
def main(port: int, worker_class: str) -> None:
    """Serve the trivial endpoint under gunicorn."""
    options = gunicorn_options(Settings.from_env(), port)
    options.pop("child_exit", None)  # no prometheus registry here
    options["worker_class"] = worker_class
    GunicornServer(lambda: app, options).run()


if __name__ == "__main__":
    main()
