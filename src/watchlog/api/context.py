"""What a view needs from the app it runs in: its settings, its store, JSON responses."""

from __future__ import annotations

import msgspec
from flask import Response, current_app

from watchlog.core.settings import Settings
from watchlog.store import Store

_encode = msgspec.json.encode


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    """Return a JSON response encoded by msgspec (faster than Flask's json)."""
    return Response(_encode(body), status=status, headers=headers,
                    mimetype="application/json")


def store() -> Store:
    found: Store = current_app.extensions["watchlog_store"]
    return found


def settings() -> Settings:
    found: Settings = current_app.config["SETTINGS"]
    return found
