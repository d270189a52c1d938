"""The producer API: watches send activity logs here; they are validated and stored."""

from __future__ import annotations

from flask import Flask

from watchlog.api.base import create_base_app
from watchlog.api.producer import ingest
from watchlog.api.producer.fast import LeanIngest
from watchlog.api.producer.openapi import producer_spec
from watchlog.core.settings import Settings
from watchlog.store import Store


def create_app(settings: Settings | None = None, store: Store | None = None,
               lean: bool = True) -> Flask:
    """Build the producer app (the application factory).

    ``lean=False`` leaves out the lean single-log path (``producer/fast.py``): every request
    through Flask (the tests compare the two).
    """
    settings = settings or Settings.from_env()
    app = create_base_app("producer", settings, store, inner=LeanIngest if lean else None)
    app.extensions["watchlog_openapi"] = producer_spec
    app.register_blueprint(ingest.bp)
    from watchlog.api.limits import init_rate_limit

    init_rate_limit(app, settings)
    return app
