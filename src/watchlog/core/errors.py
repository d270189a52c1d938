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
