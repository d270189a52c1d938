"""The single-log POST on a lean path: a watch's usual request without Flask's dispatch.

A watch sends one log per request. Through Flask that request cost ~590 µs of the
producer's CPU, ~125 µs of it Flask's own (request context, URL map, hooks) against ~24 µs
for a bare WSGI callable under the same server (docs/benchmarks.md). ``LeanIngest`` sits
between the body bound (``BoundedBodies``) and the Flask app and answers the one case that
matters for throughput itself; everything else goes on to Flask, which answers it as
before. It takes a request only when all of these hold:

- ``POST /v1/activities`` with ``Content-Type: application/json``, no content coding, a
  ``Content-Length`` of at most ``MAX_BYTES`` (one log; a batch is an array and goes on);
- no injected fault can apply to the route now (``Faults.quiet``: no draw is made);
- the credentials resolve and carry the ingest role (the same ``Auth`` and role check);
- the rate limit lets it through (the same ``RateLimit``: a refusal counts nothing, and
  Flask then refuses it again with its 429);
- the body is one JSON object that validates, that the credentials may write, inside the
  retention window (the same ``validate_items``).

When a check after the body was read fails (a batch, a log that does not validate), the
body read so far is handed to Flask in place of ``wsgi.input`` and the environ says the
request was already counted against the limit (``limits.COUNTED``): Flask answers the
error with its handlers and counts the rejection, and nothing is counted twice. From the
store call on, the request is this path's: a store error is answered here, with the same
JSON error as Flask's handler, never handed on (a second attempt would answer "duplicate"
for the write the first one made). The request is counted in the same RED metrics
(``hooks.RequestMetrics``) and log counters as on the Flask path; the security headers are
added outside both (``SecurityHeaders``).

``tests/api/test_lean_ingest.py`` sends the same requests through both paths and compares
status, headers, bodies and metrics.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import msgspec

from watchlog.api.auth import Auth, Principal, check_role
from watchlog.api.errors import error_response, internal_error
from watchlog.api.faults import Faults
from watchlog.api.hooks import RequestMetrics
from watchlog.api.limits import COUNTED, RateLimit
from watchlog.api.producer.ingest import single_answer, store_logs, validate_items
from watchlog.core.errors import WatchlogError
from watchlog.core.settings import Settings
from watchlog.store import Store

if TYPE_CHECKING:
    from flask import Flask

ROUTE = "/v1/activities"
MAX_BYTES = 16 * 1024  # a single log is well under 4 KiB; larger bodies go to Flask
_encode = msgspec.json.encode
_HEADERS = "application/json"
_STATUS = {201: "201 CREATED", 200: "200 OK"}  # as Werkzeug words them


class LeanIngest:
    """WSGI middleware: single-log POSTs answered here, every other request passed on."""

    def __init__(self, flask_app: Flask, wsgi_app: WSGIApplication) -> None:
        self.flask_app = flask_app
        self.wsgi_app = wsgi_app
        self._parts: tuple[Settings, Auth, Faults, RateLimit, Store, RequestMetrics] | None = None

    def _components(self) -> tuple[Settings, Auth, Faults, RateLimit, Store, RequestMetrics]:
        """The app's own settings, auth, faults, limiter, store and metrics (read once)."""
        if self._parts is None:
            ext = self.flask_app.extensions
            self._parts = (cast(Settings, self.flask_app.config["SETTINGS"]),
                           ext["watchlog_auth"], ext["watchlog_faults"],
                           ext["watchlog_rate_limit"], ext["watchlog_store"],
                           ext["watchlog_request_metrics"])
        return self._parts

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        if (environ.get("PATH_INFO") != ROUTE or environ.get("REQUEST_METHOD") != "POST"
                or not _one_json_body(environ)):
            return self.wsgi_app(environ, start_response)
        settings, auth, faults, limit, store, red = self._components()
        length = int(environ["CONTENT_LENGTH"])
        if length > settings.max_body_bytes or not faults.quiet(ROUTE):
            return self.wsgi_app(environ, start_response)
        try:
            p = auth.resolve(environ.get("HTTP_AUTHORIZATION", ""), environ.get("REMOTE_ADDR"))
            check_role(p, "ingest")
        except WatchlogError:
            return self.wsgi_app(environ, start_response)  # Flask answers 401/403
        if not limit.allow(p.key):
            return self.wsgi_app(environ, start_response)  # Flask answers 429
        environ[COUNTED] = True
        started = time.perf_counter()
        red.in_flight.inc()
        status = 0
        try:
            status, doc = self._ingest(environ, length, p, settings, store)
            if status == 0:  # not this path's: Flask answers from the same body
                return self.wsgi_app(environ, start_response)
            data = _encode(doc)
            start_response(_STATUS[status], [("Content-Type", _HEADERS),
                                             ("Content-Length", str(len(data)))])
            return [data]
        except WatchlogError as err:  # the body's bound, the store: answered as Flask would
            status = err.status
            return error_response(err)(environ, start_response)
        except Exception as err:  # noqa: BLE001 - a 500 as Flask's handler gives it
            status = 500
            return internal_error(err, "POST", ROUTE)(environ, start_response)
        finally:
            red.in_flight.dec()
            if status:
                red.count(ROUTE, "POST", status, False)
                red.timer(ROUTE, "POST")(time.perf_counter() - started)

    def _ingest(self, environ: WSGIEnvironment, length: int, p: Principal,
                settings: Settings, store: Store) -> tuple[int, dict[str, object]]:
        """Store the body's log; (0, {}) when it is not one valid log (Flask's to answer)."""
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)  # for Flask, if it is Flask's after all
        if body.lstrip()[:1] != b"{":
            return 0, {}
        # (a principal that is no device token may write any log: may_write passes)
        events, _, errors = validate_items([body], p, settings.retention_days)
        if errors:
            return 0, {}
        doc, status = single_answer(events[0], store_logs(store, events, 1)[0])
        return status, doc


def _one_json_body(environ: WSGIEnvironment) -> bool:
    """A JSON body of a stated length, small enough for one log, without content coding."""
    length = environ.get("CONTENT_LENGTH") or ""
    ctype = environ.get("CONTENT_TYPE") or ""
    return (length.isdigit() and 0 < int(length) <= MAX_BYTES
            and ctype.partition(";")[0].strip().lower() == "application/json"
            and (environ.get("HTTP_CONTENT_ENCODING") or "identity").lower() == "identity"
            and "HTTP_TRANSFER_ENCODING" not in environ)
