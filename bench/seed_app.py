"""The seed's own producer, from the seed's description, as the peer of the single-log POST.

``python -m bench.seed_app --port P`` serves what the seed's producer was: a Flask route
that takes a JSON log, checks that the seed's fields are present, ``RPUSH``es the JSON to
one key of the cluster through redis-py's ``RedisCluster`` client, with the request metrics
of ``prometheus_flask_exporter`` (``PrometheusMetrics(app)``, its defaults). It is written
here from that description, not copied, and served exactly as ``watchlog serve`` serves the
producer (``bench.trivial_app.serve_as_the_producer``). The naive endpoint
(``bench/naive_app.py``) is the same without the JSON round trip and the metrics: the
ceiling the issue names; this one is the system the producer replaces.
"""

from __future__ import annotations

import json

from flask import Flask, Response, jsonify, request
from prometheus_flask_exporter import PrometheusMetrics

from bench.trivial_app import lazy_cluster, serve_command
from watchlog.core.schema import REQUIRED_SEED_FIELDS

KEY = "seed:activity_logs"


def create_app() -> Flask:
    app = Flask("seed")
    PrometheusMetrics(app)
    client = lazy_cluster()

    @app.route("/", methods=["GET", "POST"])
    def log_activity() -> tuple[Response, int]:
        if request.method == "GET":
            return jsonify(status="ok"), 200
        data = request.get_json()
        missing = [f for f in REQUIRED_SEED_FIELDS if f not in data]
        if missing:
            return jsonify(error=f"Missing fields: {', '.join(missing)}"), 400
        client().rpush(KEY, json.dumps(data))
        return jsonify(message="Activity logged successfully"), 201

    return app


app = create_app()


main = serve_command("seed", app, "bench.seed_app:app")


if __name__ == "__main__":
    main()
