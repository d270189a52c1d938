"""Rate limits per authenticated principal: the producer's ingest, the consumer's costly reads.

The key is the principal the request authenticated as (``Principal.key``: the role and a
digest prefix of its credential, or the device of a device token), never the header's
text: ``Bearer  <token>`` or ``bearer <token>`` is the same principal, hence the same
budget. The principal is resolved once and kept for the view's own role check. A request
with bad credentials gets its 401 before any budget is spent.

Windows are in-process: a limit of N/s per worker means up to ``workers`` x N/s per
principal for the service (docs/security.md). We call the ``limits`` library (Flask-Limiter's
engine, same syntax) directly: measured, Flask-Limiter's extension added ~130 µs to every
request (a before_request hook on every route, limits resolved per request); this costs
~25 µs (docs/security.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from functools import wraps
from typing import TypeVar, cast

from flask import Flask, current_app, request
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from watchlog.core.errors import RateLimited
from watchlog.core.settings import Settings

# A view, sync or async (Flask's view_functions hold either).
V = TypeVar("V", bound=Callable[..., object])

# Set in the WSGI environ by a path that has already counted the request against the limit
# (a server never puts a client's header under a key without the HTTP_ prefix).
COUNTED = "watchlog.rate_counted"
INGEST_ENDPOINTS = ("ingest.post_activities", "ingest.log_activity")
# The consumer's routes whose cost grows with the data: ranges of days, whole-day
# aggregates, streams, and every extraction call.
CONSUMER_ENDPOINTS = ("queries.user_summary", "queries.daily_report", "queries.export",
                      "extraction.list_extractors", "extraction.create",
                      "extraction.describe", "extraction.delete", "extraction.batch",
                      "extraction.ack")


class RateLimit:
    """A moving window of ``spec`` (e.g. ``2000/second``) per principal."""

    def __init__(self, spec: str, scope: str = "ingest",
                 setting: str = "WATCHLOG_RATE_LIMIT") -> None:
        self.item = parse(spec)
        self.scope, self.setting = scope, setting
        self.windows = MovingWindowRateLimiter(MemoryStorage())

    def allow(self, key: str) -> bool:
        """Count a request of ``key``; False when over the limit (a refusal counts nothing)."""
        return self.windows.hit(self.item, self.scope, key)

    def check(self, key: str) -> None:
        if not self.allow(key):
            reset = self.windows.get_window_stats(self.item, self.scope, key).reset_time
            raise RateLimited(f"over {self.item} for these credentials ({self.setting}); "
                              "retry later", retry_after=max(1, math.ceil(reset - time.time())))

    def wrap(self, view: V) -> V:
        @wraps(view)
        def limited(*args: object, **kwargs: object) -> object:
            if not request.environ.get(COUNTED):  # the lean path counted it (producer/fast)
                self.check(current_app.extensions["watchlog_auth"].principal().key)
            return view(*args, **kwargs)

        return cast(V, limited)  # same signature: wraps only checks first


def limit_endpoints(app: Flask, limit: RateLimit, endpoints: Iterable[str]) -> RateLimit:
    for endpoint in endpoints:
        app.view_functions[endpoint] = limit.wrap(app.view_functions[endpoint])
    return limit


def init_rate_limit(app: Flask, settings: Settings) -> RateLimit:
    """Limit the producer's two ingest routes (one budget for both)."""
    limit = limit_endpoints(app, RateLimit(settings.rate_limit), INGEST_ENDPOINTS)
    app.extensions["watchlog_rate_limit"] = limit
    return limit


def init_consumer_rate_limit(app: Flask, settings: Settings) -> RateLimit:
    """Limit the consumer's costly routes (one budget for all of them)."""
    limit = limit_endpoints(app, RateLimit(settings.consumer_rate_limit, "consumer",
                                           "WATCHLOG_CONSUMER_RATE_LIMIT"), CONSUMER_ENDPOINTS)
    app.extensions["watchlog_rate_limit"] = limit
    return limit
