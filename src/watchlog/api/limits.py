"""Rate limits per authenticated principal: the producer's ingest, the consumer's costly reads.

The key is the principal the request authenticated as (``Principal.key``: the role and a
digest prefix of its credential, or the device of a device token), never the header's
text: ``Bearer  <token>`` or ``bearer <token>`` is the same principal, hence the same
budget. The principal is resolved once and kept for the view's own role check. A request
with bad credentials gets its 401 before any budget is spent.

Windows are in-process: a limit of N/s per worker means up to ``workers`` x N/s per
principal for the service (docs/security.md). Limits are written in the ``limits``
library's syntax (Flask-Limiter's), parsed by it; the window itself is ``MovingWindow``
below: measured, Flask-Limiter's extension added ~130 µs to every request (a before_request
hook on every route, limits resolved per request), ``limits``' moving window on its memory
storage ~18 µs at 2,000 requests/s, this one ~1-2 µs.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import wraps
from typing import TypeVar, cast

from flask import Flask, current_app, request
from limits import parse

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


class MovingWindow:
    """At most ``amount`` hits per key in any ``seconds``: the times of the hits in the
    window, oldest first, in a deque per key (a refusal is not a hit).

    The same exact moving window as ``limits``' ``MovingWindowRateLimiter``, whose memory
    storage prepends each hit to a list of the window's hits (a copy of ~2,000 entries per
    request at the default limit: ~8 % of a single-log request's CPU, bench/single.py).
    """

    def __init__(self, amount: int, seconds: float) -> None:
        self.amount, self.seconds = amount, seconds
        self.hits: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def hit(self, key: str) -> bool:
        now = time.monotonic()
        with self.lock:
            q = self.hits.get(key)
            if q is None:
                q = self.hits[key] = deque()
            edge = now - self.seconds
            while q and q[0] <= edge:
                q.popleft()
            if len(q) >= self.amount:
                return False
            q.append(now)
            return True

    def reset_in(self, key: str) -> float:
        """Seconds until the oldest hit of ``key`` leaves the window (a hit is allowed)."""
        with self.lock:
            q = self.hits.get(key)
            return q[0] + self.seconds - time.monotonic() if q else 0.0


class RateLimit:
    """A moving window of ``spec`` (e.g. ``2000/second``) per principal."""

    def __init__(self, spec: str, scope: str = "ingest",
                 setting: str = "WATCHLOG_RATE_LIMIT") -> None:
        self.item = parse(spec)
        self.scope, self.setting = scope, setting
        self.windows = MovingWindow(self.item.amount, self.item.get_expiry())

    def allow(self, key: str) -> bool:
        """Count a request of ``key``; False when over the limit (a refusal counts nothing)."""
        return self.windows.hit(key)

    def check(self, key: str) -> None:
        if not self.allow(key):
            reset = self.windows.reset_in(key)
            raise RateLimited(f"over {self.item} for these credentials ({self.setting}); "
                              "retry later", retry_after=max(1, math.ceil(reset)))

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
