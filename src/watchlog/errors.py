"""One exception family; each app turns it into a JSON error with its status."""

from __future__ import annotations


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
