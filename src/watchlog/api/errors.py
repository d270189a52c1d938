"""One JSON error handler per app: every failure answers ``{"error", "message"}``."""

from __future__ import annotations

import logging
import traceback

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from watchlog.api.context import json_response, settings
from watchlog.core.errors import InjectedFault, WatchlogError

log = logging.getLogger(__name__)


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


def install(app: Flask) -> None:
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
        return internal_error(err, request.method, request.url_rule)


def internal_error(err: Exception, method: str, route: object) -> Response:
    """Log an unexpected error and answer a JSON 500.

    The type and the stack, never the message: a message may quote input (personal data,
    a token). The stack shows code lines only, no values.
    """
    log.error("unhandled %s on %s %s\n%s", type(err).__name__, method, route,
              "".join(traceback.format_tb(err.__traceback__)))
    return json_response({"error": "internal", "message": "internal error; see logs"}, 500)
