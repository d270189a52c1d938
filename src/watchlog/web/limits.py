"""Per-token rate limiting of the producer (Flask-Limiter, in-process storage).

In-process storage costs nothing per request beyond a dict update; a limit of N/s per
worker means up to ``workers`` x N/s per token for the service (documented). The key is a
digest of the bearer token, never the token itself.
"""

from __future__ import annotations

import hashlib
import time

from flask import Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded

from watchlog.settings import Settings
from watchlog.web.common import json_response


def _token_key() -> str:
    header = request.headers.get("Authorization", "")
    if header:
        return hashlib.sha256(header.encode()).hexdigest()[:16]
    return request.remote_addr or "anonymous"


def init_rate_limit(app: Flask, settings: Settings) -> Limiter:
    limiter = Limiter(
        key_func=_token_key,
        app=app,
        storage_uri="memory://",
        headers_enabled=False,  # its headers would also stamp Retry-After on our 503s
        default_limits=[],
        strategy="moving-window",
    )
    @app.errorhandler(RateLimitExceeded)
    def limited(err: RateLimitExceeded) -> Response:
        window = limiter.current_limit
        wait = max(1, int(window.reset_at - time.time())) if window else 1
        return json_response({"error": "rate_limited",
                              "message": f"over {err.description} for this token; retry later"},
                             429, {"Retry-After": str(wait)})

    for endpoint in ("ingest.post_activities", "ingest.log_activity"):
        view = app.view_functions[endpoint]
        app.view_functions[endpoint] = limiter.limit(settings.rate_limit)(view)
    return limiter
