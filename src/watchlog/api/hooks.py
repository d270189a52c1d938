"""The hooks around every request: RED metrics and injected faults."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from watchlog.api.errors import error_response
from watchlog.api.faults import Faults
from watchlog.core import metrics
from watchlog.core.errors import InjectedFault
from watchlog.core.settings import Settings

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install(app: Flask, service: str, settings: Settings) -> None:
    """RED metrics and injected faults, in one hook before and one after each request.

    Faults may sleep or fail before a view runs; an 'after' abort replaces the finished
    response (the write is committed: a client retry must find a duplicate). The metrics
    then see the response the client gets. Label children are looked up once per label set
    (methods outside the standard set are counted as OTHER: labels stay bounded).
    """
    in_flight = metrics.HTTP_IN_FLIGHT.labels(service)
    faults = Faults(service, settings, lambda: app.extensions["watchlog_store"].rc)
    app.extensions["watchlog_faults"] = faults
    requests = metrics.child_cache(metrics.HTTP_REQUESTS)
    durations = metrics.child_cache(metrics.HTTP_DURATION)

    @app.before_request
    def start() -> None:
        g.started = time.perf_counter()
        in_flight.inc()
        rule = request.url_rule
        if rule is not None:
            g.abort_after = faults.before(rule.rule)

    @app.after_request
    def finish(response: Response) -> Response:
        rule = request.url_rule
        route = rule.rule if rule is not None else "<unmatched>"
        if g.pop("abort_after", False) and response.status_code < 400:
            try:
                faults.abort(None, route, "abort_after")
            except InjectedFault as err:
                g.injected = True
                response = error_response(err)
        method = request.method if request.method in METHODS else "OTHER"
        injected = "true" if g.get("injected") else "false"
        requests(service, route, method, str(response.status_code), injected).inc()
        started = g.get("started")
        if started is not None:
            observe = durations(service, route, method).observe
            if response.is_streamed:  # an export: timed to its last byte, when it is closed
                response.call_on_close(lambda: observe(time.perf_counter() - started))
            else:
                observe(time.perf_counter() - started)
        return response

    @app.teardown_request
    def done(_exc: BaseException | None) -> None:
        if g.pop("started", None) is not None:
            in_flight.dec()
