"""Routes every service answers: health, readiness, metrics, the OpenAPI description, docs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app

from watchlog.api.context import json_response, settings, store
from watchlog.core import metrics
from watchlog.core.errors import NotFound

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    """The process is alive."""
    return json_response({"status": "ok", "service": current_app.config["SERVICE"]})


@bp.get("/ready")
def ready() -> Response:
    """The cluster is reachable and every master says cluster_state:ok."""
    ok, detail = store().ready()
    body = {"status": "ready" if ok else "unavailable", "redis": detail}
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
    from watchlog.api.openapi import DOCS_CSP, render_docs

    spec = current_app.extensions["watchlog_openapi"]()
    return Response(render_docs(spec), mimetype="text/html",
                    headers={"Content-Security-Policy": DOCS_CSP})


@bp.get("/docs/init.js")
def docs_init() -> Response:
    from watchlog.api.openapi import DOCS_CSP, DOCS_INIT

    return Response(DOCS_INIT, mimetype="text/javascript",
                    headers={"Content-Security-Policy": DOCS_CSP})


@bp.get("/docs/static/<name>")
def docs_asset(name: str) -> Response:
    """Swagger UI's own files, from the swagger-ui-py package."""
    from watchlog.api.openapi import DOCS_CSP, UI_ASSETS, ui_asset

    data = ui_asset(name)
    if data is None:
        raise NotFound(f"no such file: {name}")
    return Response(data, mimetype=UI_ASSETS[name],
                    headers={"Content-Security-Policy": DOCS_CSP})
