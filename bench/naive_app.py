"""The naive one-command endpoint: what the seed's producer did, written here as a ceiling.

``python -m bench.naive_app --port P`` serves one Flask route that takes the raw request
body and ``RPUSH``es it to one key of the cluster through redis-py's ``RedisCluster``
client: no validation, no authentication, no idempotency, no aggregates, no WAIT. It is
served exactly as ``watchlog serve`` serves the producer (the server ``WATCHLOG_SERVER``
names, the same workers and threads), so the single-log POST of the producer can be
compared with it in the same run. Its Redis user comes from ``WATCHLOG_REDIS_USERNAME`` /
``WATCHLOG_REDIS_PASSWORD`` (the bench passes the admin user: the apps' user may not
``RPUSH``).
"""

from __future__ import annotations

import click
from flask import Flask, Response, request

from bench.trivial_app import serve_as_the_producer
from watchlog.core.settings import Settings
from watchlog.store.cluster import connect

KEY = "naive:logs"


def create_app() -> Flask:
    app = Flask("naive")
    state: dict[str, object] = {}

    def client():  # noqa: ANN202 - created after the server forks its workers
        rc = state.get("rc")
        if rc is None:
            rc = state["rc"] = connect(Settings.from_env())
        return rc

    @app.route("/", methods=["GET", "POST"])
    def index() -> Response:
        if request.method == "GET":
            return Response(b'{"status":"ok"}', mimetype="application/json")
        n = client().rpush(KEY, request.get_data(cache=False))  # type: ignore[attr-defined]
        return Response(b'{"status":"ok","length":%d}' % n, status=201,
                        mimetype="application/json")

    return app


app = create_app()


@click.command()
@click.option("--port", type=int, required=True)
def main(port: int) -> None:
    """Serve the naive endpoint as the producer is served."""
    serve_as_the_producer("naive", app, "bench.naive_app:app", port)


if __name__ == "__main__":
    main()
