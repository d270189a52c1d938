"""What both APIs share: the app skeleton, JSON errors, RED metrics, health and docs."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

import msgspec
from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from watchlog.core import metrics
from watchlog.core.errors import InjectedFault, InvalidInput, NotFound, WatchlogError
from watchlog.core.settings import Settings
from watchlog.faults import Faults, decode_spec
from watchlog.store import Store
from watchlog.store.cluster import unavailable_as_503
from watchlog.web.auth import Auth, requires
from watchlog.web.bodies import BoundedBodies

log = logging.getLogger(__name__)
_encode = msgspec.json.encode

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    """Return a JSON response encoded by msgspec (faster than Flask's json)."""
    return Response(_encode(body), status=status, headers=headers,
                    mimetype="application/json")


def error_response(err: WatchlogError) -> Response:
    headers = {}
    retry_after = err.details.get("retry_after")
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="watchlog"'
    if err.status == 408:
        headers["Connection"] = "close"  # the rest of a slow body is not waited for
    return json_response(err.to_dict(), err.status, headers)


def create_base_app(service: str, settings: Settings, store: Store | None) -> Flask:
    """Return a Flask app with errors, metrics, security headers and health routes."""
    app = Flask(f"watchlog.{service}")
    app.config["SERVICE"] = service
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["watchlog_store"] = store if store is not None else Store(settings)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["watchlog_auth"] = Auth(settings)
    _install_errors(app)
    _install_hooks(app, service, settings)
    app.wsgi_app = SecurityHeaders(BoundedBodies(  # type: ignore[method-assign]
        app.wsgi_app, settings.body_timeout, settings.body_min_rate, settings.threads))
    app.register_blueprint(health_blueprint())
    app.register_blueprint(admin_blueprint())
    return app


def store() -> Store:
    return current_app.extensions["watchlog_store"]  # type: ignore[no-any-return]


def settings() -> Settings:
    return current_app.config["SETTINGS"]  # type: ignore[no-any-return]


def _install_errors(app: Flask) -> None:
    @app.errorhandler(WatchlogError)
    def watchlog_error(err: WatchlogError) -> Response:
        if isinstance(err, InjectedFault):
            g.injected = True
        return error_response(err)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        status = err.code or 500
        code = (err.name or "error").lower().replace(" ", "_")
        message = err.description or err.name
        if status == 413:
            message = f"request body over the limit of {settings().max_body_bytes} bytes"
        return json_response({"error": code, "message": message}, status)

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> Response:
        # The type and the stack, never the message: a message may quote input (personal
        # data, a token). The stack shows code lines only, no values.
        log.error("unhandled %s on %s %s\n%s", type(err).__name__, request.method,
                  request.url_rule, "".join(traceback.format_tb(err.__traceback__)))
        return json_response({"error": "internal", "message": "internal error; see logs"}, 500)


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _install_hooks(app: Flask, service: str, settings: Settings) -> None:
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


class SecurityHeaders:
    """WSGI middleware adding the security headers to every response, errors included.

    At the WSGI layer it costs a list extend; as a Flask after_request hook it cost ~50 us
    a request (werkzeug's Headers.setdefault, five times).
    """

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app
        self.extra = [(k, v) for k, v in SECURITY_HEADERS.items()]
        self.names = {k.lower() for k in SECURITY_HEADERS}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {k.lower() for k, _ in headers} & self.names
            headers.extend(kv for kv in self.extra if kv[0].lower() not in present)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def health_blueprint() -> Blueprint:
    bp = Blueprint("health", __name__)

    @bp.get("/health")
    def health() -> Response:
        """The process is alive."""
        return json_response({"status": "ok", "service": current_app.config["SERVICE"]})

    @bp.get("/ready")
    def ready() -> Response:
        """The cluster is reachable and every master says cluster_state:ok."""
        ok, detail = store().ready()
        body: dict[str, Any] = {"status": "ready" if ok else "unavailable", "redis": detail}
        if not settings().auth_enabled:
            body["warning"] = "authentication is off (WATCHLOG_AUTH=off)"
        return json_response(body, 200 if ok else 503)

    @bp.get("/metrics")
    def prometheus() -> Response:
        """Prometheus exposition of every worker's metrics."""
        extra = current_app.extensions.get("watchlog_scrape_gauges")
        text, ctype = metrics.render(extra, current_app.config["SERVICE"])
        return Response(text, headers={"Content-Type": ctype})

    @bp.get("/openapi.json")
    def openapi() -> Response:
        """This API's OpenAPI 3 description."""
        spec: Callable[[], dict[str, Any]] = current_app.extensions["watchlog_openapi"]
        return json_response(spec())

    @bp.get("/docs")
    def docs() -> Response:
        """An interactive page of the OpenAPI description (Swagger UI, served offline)."""
        from watchlog.web.openapi import DOCS_CSP, render_docs

        spec = current_app.extensions["watchlog_openapi"]()
        return Response(render_docs(spec), mimetype="text/html",
                        headers={"Content-Security-Policy": DOCS_CSP})

    @bp.get("/docs/init.js")
    def docs_init() -> Response:
        from watchlog.web.openapi import DOCS_CSP, DOCS_INIT

        return Response(DOCS_INIT, mimetype="text/javascript",
                        headers={"Content-Security-Policy": DOCS_CSP})

    @bp.get("/docs/static/<name>")
    def docs_asset(name: str) -> Response:
        """Swagger UI's own files, from the swagger-ui-py package."""
        from watchlog.web.openapi import DOCS_CSP, UI_ASSETS, ui_asset

        data = ui_asset(name)
        if data is None:
            raise NotFound(f"no such file: {name}")
        return Response(data, mimetype=UI_ASSETS[name],
                        headers={"Content-Security-Policy": DOCS_CSP})

    return bp


def admin_blueprint() -> Blueprint:
    bp = Blueprint("admin", __name__)

    @bp.get("/admin/faults")
    @requires("admin")
    def get_faults() -> Response:
        """The fault spec in force on this service."""
        # Fresh from Redis: another worker may have taken a PUT a moment ago, and a client
        # that reads, changes one field and writes back must not undo it.
        return json_response(current_app.extensions["watchlog_faults"].current(fresh=True))

    @bp.put("/admin/faults")
    @requires("admin")
    def put_faults() -> Response:
        """Replace the fault spec (or apply a preset) on every worker within a second."""
        spec = decode_spec(request.get_data())
        known = {rule.rule for rule in current_app.url_map.iter_rules()}
        unknown = [r for r in spec.routes if r not in known]
        if unknown:
            raise InvalidInput(f"routes: {unknown[0]!r} is not a route of this service",
                               field="routes")
        with unavailable_as_503("faults"):
            return json_response(current_app.extensions["watchlog_faults"].set(spec))

    @bp.delete("/admin/faults")
    @requires("admin")
    def reset_faults() -> Response:
        """Go back to the WATCHLOG_FAULT_* settings."""
        with unavailable_as_503("faults"):
            return json_response(current_app.extensions["watchlog_faults"].set(None))

    return bp
