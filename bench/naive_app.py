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

from flask import Flask, Response, request

from bench.trivial_app import lazy_cluster, serve_command

KEY = "naive:logs"


def create_app() -> Flask:
    app = Flask("naive")
    client = lazy_cluster()

    @app.route("/", methods=["GET", "POST"])
    def index() -> Response:
        if request.method == "GET":
            return Response(b'{"status":"ok"}', mimetype="application/json")
        n = client().rpush(KEY, request.get_data(cache=False))
        return Response(b'{"status":"ok","length":%d}' % n, status=201,
                        mimetype="application/json")

    return app


app = create_app()


main = serve_command("naive", app, "bench.naive_app:app")


if __name__ == "__main__":
    main()
