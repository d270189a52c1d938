"""The consumer API: internal users read logs, summaries, reports, exports and feeds."""

from __future__ import annotations

from flask import Flask

from watchlog.api.base import create_base_app
from watchlog.api.bodies import StreamSlots
from watchlog.api.consumer import extraction, queries
from watchlog.api.consumer.openapi import consumer_spec
from watchlog.core.settings import Settings
from watchlog.store import Store


def create_app(settings: Settings | None = None, store: Store | None = None) -> Flask:
    """Build the consumer app (the application factory)."""
    settings = settings or Settings.from_env()
    app = create_base_app("consumer", settings, store)
    app.extensions["watchlog_openapi"] = consumer_spec
    # with the send bound off (WATCHLOG_SEND_TIMEOUT=0), streams are not capped either
    app.extensions["watchlog_stream_slots"] = (
        StreamSlots(settings.threads) if settings.send_timeout > 0 else None)
    app.extensions["watchlog_scrape_gauges"] = extraction.scrape_gauges(
        app.extensions["watchlog_store"])
    app.register_blueprint(queries.bp)
    app.register_blueprint(extraction.bp)
    from watchlog.api.consumer.reports import reports_blueprint

    app.register_blueprint(reports_blueprint(settings))
    from watchlog.api.limits import init_consumer_rate_limit

    init_consumer_rate_limit(app, settings)
    return app
