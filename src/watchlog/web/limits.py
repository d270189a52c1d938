"""Per-token rate limiting of the producer: one moving window per bearer token.

The key is a digest of the ``Authorization`` header, never the token; one budget covers
both ingest routes. Storage is in-process, so a limit of N/s per worker means up to
``workers`` x N/s per token for the service (docs/security.md). We call the ``limits``
library (Flask-Limiter's engine, same ``WATCHLOG_RATE_LIMIT`` syntax) directly: measured,
Flask-Limiter's extension added ~130 µs to every request (a before_request hook on every
route, limits resolved per request); this costs ~25 µs (docs/security.md).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, request
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from watchlog.errors import WatchlogError
from watchlog.settings import Settings

INGEST_ENDPOINTS = ("ingest.post_activities", "ingest.log_activity")


class RateLimited(WatchlogError):
    status = 429
    code = "rate_limited"


def _token_key() -> str:
    header = request.headers.get("Authorization", "")
    if header:
        return hashlib.sha256(header.encode()).hexdigest()[:16]
    return request.remote_addr or "anonymous"


class RateLimit:
    """A moving window of ``spec`` (e.g. ``2000/second``) per token."""

    def __init__(self, spec: str) -> None:
        self.item = parse(spec)
        self.windows = MovingWindowRateLimiter(MemoryStorage())

    def check(self) -> None:
        key = _token_key()
        if not self.windows.hit(self.item, "ingest", key):
            reset = self.windows.get_window_stats(self.item, "ingest", key).reset_time
            raise RateLimited(f"over {self.item} for this token (WATCHLOG_RATE_LIMIT); "
                              "retry later", retry_after=max(1, math.ceil(reset - time.time())))

    def wrap(self, view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def limited(*args: Any, **kwargs: Any) -> Any:
            self.check()
            return view(*args, **kwargs)

        return limited


def init_rate_limit(app: Flask, settings: Settings) -> RateLimit:
    limit = RateLimit(settings.rate_limit)
    for endpoint in INGEST_ENDPOINTS:
        app.view_functions[endpoint] = limit.wrap(app.view_functions[endpoint])
    app.extensions["watchlog_rate_limit"] = limit
    return limit
