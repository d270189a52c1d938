"""Who may do what: bearer tokens for watches, API keys with a role for internal users.

Secrets are kept only as SHA-256 digests and compared with ``hmac.compare_digest``.
Per-device tokens come from a file of ``device_id <sha256 hex>`` lines and are found by
their digest (a timing difference there reveals nothing about a token, only about a
digest nobody can invert). Nothing here logs a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from flask import current_app, g, request

from watchlog.errors import Forbidden, Unauthorized
from watchlog.settings import Settings

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
RANK = {"ingest": 0, "reader": 1, "admin": 2}
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class Principal:
    role: str  # ingest | reader | admin
    device_id: str | None = None  # set for a per-device token
    # Who it is, for rate limits: the role and a digest prefix of the credential (never
    # the header's text, so spacing or the scheme's case make no new identity).
    key: str = ""


class Auth:
    """Resolve the ``Authorization`` header of a request to a ``Principal``."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth_enabled
        # A comma-separated value holds several keys of one role: old and new while
        # clients move over during a rotation (docs/security.md).
        self.roles = [(digest(k.strip()), role) for s, role in (
            (settings.ingest_token, "ingest"), (settings.reader_key, "reader"),
            (settings.admin_key, "admin")) for k in s.split(",") if k.strip()]
        self.devices = _device_tokens(settings.device_tokens_file)
        if not self.enabled:
            log.warning("authentication is OFF (WATCHLOG_AUTH=off): anyone can read and write")

    def principal(self) -> Principal:
        """The request's principal, resolved once per request (the limiter asks first)."""
        p: Principal | None = g.get("principal")
        if p is None:
            p = g.principal = self._resolve()
        return p

    def _resolve(self) -> Principal:
        if not self.enabled:
            return Principal("admin", key="addr:" + (request.remote_addr or "-"))
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing credentials: send 'Authorization: Bearer <token>'")
        d = digest(token.strip())
        role = None
        for known, r in self.roles:
            if hmac.compare_digest(known, d):
                role = r
        if role is not None:
            return Principal(role, key=f"{role}:{d[:8].hex()}")
        device = self.devices.get(d)
        if device is not None:
            return Principal("ingest", device, key="device:" + device)
        raise Unauthorized("invalid credentials")


def _device_tokens(path: str) -> dict[bytes, str]:
    """Read ``device_id <sha256 hex>`` lines; a malformed line stops the start-up."""
    out: dict[bytes, str] = {}
    if not path:
        return out
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) != 2 or not _SHA256_HEX.match(parts[1]):
            # Name the line, never echo it: it may hold a token pasted in clear.
            raise ValueError(f"{path}:{n}: expected 'device_id <64 hex digits of sha256(token)>'")
        out[bytes.fromhex(parts[1])] = parts[0]
    return out


def requires(role: str) -> Callable[[F], F]:
    """Let the view run only for a principal whose role is at least ``role``."""

    def wrap(view: F) -> F:
        @wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            p = current_app.extensions["watchlog_auth"].principal()
            if RANK[p.role] < RANK[role]:
                raise Forbidden(f"this needs the {role} role; your credentials have {p.role}")
            if role == "ingest" and p.role == "reader":
                raise Forbidden("readers cannot write logs")
            g.principal = p
            return view(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return wrap
