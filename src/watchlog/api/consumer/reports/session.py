"""Sign-in for the reports page: a signed session cookie in place of the API's bearer key.

The cookie is Flask's session (itsdangerous: HMAC-signed with ``WATCHLOG_SESSION_SECRET``,
timestamped). It holds the role and an 8-byte digest prefix of the key that signed in,
never the key; each request checks that prefix against the keys configured now, so a key
removed in a rotation ends its sessions. It is ``HttpOnly``, ``SameSite=Strict``, limited
to ``/reports``, ``Secure`` when the request came over https, and refused by the server
once older than ``WATCHLOG_SESSION_LIFETIME`` (Flask checks the signed timestamp).
Only reader and admin keys sign in; the ingest token and device tokens are refused.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from flask import Flask, Request, current_app, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from watchlog.api.auth import Auth, digest
from watchlog.core.settings import Settings

COOKIE = "watchlog_reports"
PATH = "/reports"
ROLES = ("reader", "admin")


class ReportsSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened only under ``/reports`` (the JSON API never
    pays for it), and ``Secure`` whenever the request came over https."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.path.startswith(PATH):
            return self.session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)


def configure(app: Flask, settings: Settings) -> None:
    """Set the app's session and CSRF settings; no secret leaves the reports off."""
    if settings.session_secret:
        app.secret_key = settings.session_secret
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE, SESSION_COOKIE_PATH=PATH, SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.session_lifetime),
        SESSION_REFRESH_EACH_REQUEST=False,  # the lifetime counts from the sign-in
        # Flask-WTF's https check wants a Referer, which Referrer-Policy: no-referrer
        # withholds; the token and SameSite=Strict stand without it.
        WTF_CSRF_SSL_STRICT=False, WTF_CSRF_TIME_LIMIT=settings.session_lifetime)
    app.session_interface = ReportsSessionInterface()


def key_id(d: bytes) -> str:
    return d[:8].hex()


def role_of_key(key: str) -> tuple[str | None, str]:
    """Return (role, why not) for a key typed into the sign-in form."""
    auth: Auth = current_app.extensions["watchlog_auth"]
    d = digest(key.strip())
    role = auth.role_of(d)
    if role in ROLES:
        return role, ""
    if role == "ingest" or d in auth.devices:
        return None, ("this is a watch's token: it sends logs and cannot read them; "
                      "sign in with a reader or admin key")
    return None, "unknown key"


def sign_in(role: str, key: str) -> None:
    session.clear()
    session.permanent = True
    session["role"] = role
    session["kid"] = key_id(digest(key.strip()))


def sign_out() -> None:
    session.clear()


def signed_in() -> tuple[str, str] | None:
    """The (role, rate-limit key) of the request's session, or None (not signed in)."""
    auth: Auth = current_app.extensions["watchlog_auth"]
    if not auth.enabled:
        return "admin", "addr:" + (request.remote_addr or "-")
    role, kid = session.get("role"), session.get("kid")
    if role not in ROLES or not isinstance(kid, str):
        return None
    # The key that signed in must still be configured, with the same role.
    found = False
    for known, r in auth.roles:
        if r == role and hmac.compare_digest(key_id(known), kid):
            found = True
    return (role, f"{role}:{kid}") if found else None


