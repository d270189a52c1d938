"""The app skeleton both APIs share: errors, hooks, security headers, health and admin."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast
from wsgiref.types import WSGIApplication

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from watchlog.api import admin, errors, health, hooks
from watchlog.api.auth import Auth
from watchlog.api.bodies import BoundedBodies
from watchlog.api.security import SecurityHeaders
from watchlog.core.settings import Settings
from watchlog.store import Store


def create_base_app(service: str, settings: Settings, store: Store | None,
                    inner: Callable[[Flask, WSGIApplication], WSGIApplication] | None = None
                    ) -> Flask:
    """Return a Flask app with errors, metrics, security headers and health routes.

    ``inner(app, wsgi_app)``, when given, wraps the app's WSGI callable inside the body bound
    and the security headers (the producer's lean single-log path, ``producer/fast.py``).
    """
    app = Flask(f"watchlog.{service}")
    app.config["SERVICE"] = service
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # A path with an empty segment (`/v1/users/0%2F/activities` decodes to `…/0//…`) is a JSON
    # 404, not Werkzeug's HTML 308 to another user's URL.
    app.url_map.merge_slashes = False
    app.extensions["watchlog_store"] = store if store is not None else Store(settings)
    cast(DefaultJSONProvider, app.json).sort_keys = False  # Flask's default provider
    app.extensions["watchlog_auth"] = Auth(settings)
    errors.install(app)
    hooks.install(app, service, settings)
    wsgi_app: WSGIApplication = app.wsgi_app
    if inner is not None:
        wsgi_app = inner(app, wsgi_app)
    # WSGI middleware goes in place of the app's wsgi_app method, as Flask documents.
    app.wsgi_app = SecurityHeaders(BoundedBodies(  # type: ignore[method-assign]
        wsgi_app, settings.body_timeout, settings.body_min_rate, settings.threads))
    if settings.proxy_hops:  # opt-in: a forwarding header is trusted only from known proxies
        hops = settings.proxy_hops
        # in place of wsgi_app too, outermost: every layer sees the client's scheme and host
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.register_blueprint(health.bp)
    app.register_blueprint(admin.bp)
    return app
