"""The fault-injection admin routes (``/admin/faults``), for the admin key only."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from watchlog.api.auth import requires
from watchlog.api.context import json_response
from watchlog.api.faults import decode_spec
from watchlog.core.errors import InvalidInput
from watchlog.store.cluster import unavailable_as_503

bp = Blueprint("admin", __name__)


@bp.get("/admin/faults")
@requires("admin")
def get_faults() -> Response:
    """The fault spec in force on this service."""
    # Fresh from Redis: another worker may have taken a PUT a moment ago, and a client
    # that reads, changes one field and writes back must not undo it.
    return json_response(current_app.extensions["watchlog_faults"].current(fresh=True))


@bp.put("/admin/faults")
@requires("admin")
def put_faults() -> Response:
    """Replace the fault spec (or apply a preset) on every worker within a second."""
    spec = decode_spec(request.get_data())
    known = {rule.rule for rule in current_app.url_map.iter_rules()}
    unknown = [r for r in spec.routes if r not in known]
    if unknown:
        raise InvalidInput(f"routes: {unknown[0]!r} is not a route of this service",
                           field="routes")
    with unavailable_as_503("faults"):
        return json_response(current_app.extensions["watchlog_faults"].set(spec))


@bp.delete("/admin/faults")
@requires("admin")
def reset_faults() -> Response:
    """Go back to the WATCHLOG_FAULT_* settings."""
    with unavailable_as_503("faults"):
        return json_response(current_app.extensions["watchlog_faults"].set(None))
