"""The hooks around every request: RED metrics and injected faults."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask, Response, g, request

from watchlog.api.errors import error_response
from watchlog.api.faults import Faults
from watchlog.core import metrics
from watchlog.core.errors import InjectedFault
from watchlog.core.settings import Settings

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """The RED metrics of one service's requests: in flight, counted, timed.

    Label children are looked up once per label set; the Flask hooks below and the
    producer's lean single-log path (``api/producer/fast.py``) count through the same
    object, so a request is counted the same way on either path.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self.in_flight = metrics.HTTP_IN_FLIGHT.labels(service)
        self._requests = metrics.child_cache(metrics.HTTP_REQUESTS)
        self._durations = metrics.child_cache(metrics.HTTP_DURATION)

    def count(self, route: str, method: str, status: int, injected: bool) -> None:
        method = method if method in METHODS else "OTHER"
        self._requests(self.service, route, method, str(status),
                       "true" if injected else "false").inc()

    def timer(self, route: str, method: str) -> Callable[[float], None]:
        """``observe(seconds)`` of the route's duration histogram."""
        observe: Callable[[float], None] = self._durations(
            self.service, route, method if method in METHODS else "OTHER").observe
        return observe


def install(app: Flask, service: str, settings: Settings) -> None:
    """RED metrics and injected faults, in one hook before and one after each request.

    Faults may sleep or fail before a view runs; an 'after' abort replaces the finished
    response (the write is committed: a client retry must find a duplicate). The metrics
    then see the response the client gets. Label children are looked up once per label set
    (methods outside the standard set are counted as OTHER: labels stay bounded).
    """
    red = app.extensions["watchlog_request_metrics"] = RequestMetrics(service)
    in_flight = red.in_flight
    faults = Faults(service, settings, lambda: app.extensions["watchlog_store"].rc)
    app.extensions["watchlog_faults"] = faults

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
        red.count(route, request.method, response.status_code, bool(g.get("injected")))
        started = g.get("started")
        if started is not None:
            observe = red.timer(route, request.method)
            if response.is_streamed:  # an export: timed to its last byte, when it is closed
                response.call_on_close(lambda: observe(time.perf_counter() - started))
            else:
                observe(time.perf_counter() - started)
        return response

    @app.teardown_request
    def done(_exc: BaseException | None) -> None:
        if g.pop("started", None) is not None:
            in_flight.dec()
