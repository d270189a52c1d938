"""One exception family: every error watchlog raises on purpose is a ``WatchlogError``.

Each API turns one into a JSON error with its status (one handler, ``api/errors.py``); the
CLI turns one into a red line and exit 1 (one handler, ``cli/options.failures_as_click``).
The first group are answers of the APIs; the second, failures of the programs around them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


class WatchlogError(Exception):
    """Base of every error watchlog raises on purpose."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, status: int | None = None, **details: object) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.details = {k: v for k, v in details.items() if v is not None}

    def to_dict(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message, **self.details}


class InvalidInput(WatchlogError):
    """A request the client must change: 422 by default, 400 when malformed."""

    status = 422
    code = "invalid"


class Malformed(InvalidInput):
    """A body that is not valid JSON (or gzip, or zstd): 400."""

    status = 400
    code = "malformed"


def too_deep() -> Malformed:
    """The error for JSON nested past msgspec's depth limit.

    msgspec stops decoding (and encoding) at the interpreter's recursion limit with a
    ``RecursionError``, long before the C stack is at risk; every decode of a request body
    turns that into this 400 instead of an unhandled 500.
    """
    return Malformed("malformed JSON: nested too deeply")


class PayloadTooLarge(WatchlogError):
    status = 413
    code = "too_large"


class UnsupportedMediaType(WatchlogError):
    status = 415
    code = "unsupported_media_type"


class NotFound(WatchlogError):
    status = 404
    code = "not_found"


class Unauthorized(WatchlogError):
    status = 401
    code = "unauthorized"


class Forbidden(WatchlogError):
    status = 403
    code = "forbidden"


class StoreUnavailable(WatchlogError):
    """The cluster cannot serve now (down, failing over, slots moving): retry later."""

    status = 503
    code = "store_unavailable"


class ReplicasUnavailable(StoreUnavailable):
    """Fewer replicas confirmed a write than ``WATCHLOG_WAIT_REPLICAS`` asks: not acknowledged.

    The write may or may not have reached the master (the client's retry is answered
    ``duplicate`` when it had); it is never answered as stored until a replica has it.
    """

    code = "replicas_unavailable"


class InjectedFault(WatchlogError):
    """An error response produced on purpose by fault injection."""

    code = "injected_fault"


class Conflict(WatchlogError):
    """The request clashes with the current state (an extractor that exists, a cap reached)."""

    status = 409
    code = "conflict"


class RequestTimeout(WatchlogError):
    """The client took too long to send its request body."""

    status = 408
    code = "request_timeout"


class RateLimited(WatchlogError):
    """Over the rate limit of these credentials (``WATCHLOG_*RATE_LIMIT``): retry later."""

    status = 429
    code = "rate_limited"


class Busy(WatchlogError):
    """Every slot for slow bodies or streams is taken: retry later."""

    status = 503
    code = "busy"


# -- failures of the programs around the APIs (settings, launcher, clients) --------------


class InvalidSetting(WatchlogError, ValueError):
    """A ``WATCHLOG_*`` setting (or a file it names) that cannot be used as given."""

    code = "invalid_setting"


class LauncherError(WatchlogError, RuntimeError):
    """A launcher failure a person can act on (port taken, binary missing...)."""

    code = "launcher"


class ScaleError(LauncherError):
    """The cluster cannot be grown, shrunk or rebalanced as asked (stated in the message)."""

    code = "scale"


class GaveUp(WatchlogError):
    """Every attempt failed (or the time budget ran out); carries the last failure."""

    code = "gave_up"

    def __init__(self, message: str, response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.response = response


class NoCredentials(WatchlogError):
    """No token of the role was found; the message names every place looked."""

    code = "no_credentials"


class ExtractError(WatchlogError):
    """A call to the consumer API failed; ``transient`` if retries ran out (not a 4xx)."""

    code = "extract"

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class VerifyError(WatchlogError):
    """The checker could not run (not: the system failed the check)."""

    code = "verify"
