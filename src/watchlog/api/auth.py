"""Who may do what: bearer tokens for watches, API keys with a role for internal users.

Secrets are kept only as SHA-256 digests and compared with ``hmac.compare_digest``.
Per-device tokens come from a file of ``device_id <sha256 hex> user_id[,user_id...]`` lines
and are found by their digest (a timing difference there reveals nothing about a token,
only about a digest nobody can invert). Nothing here logs a token.

A device token writes only for its own ``device_id`` and for the users its line names; a
line of the older two-field form binds the device to no user (its logs get 403) and ``*``
lets it write for any user, like the shared ingest token of a trusted gateway.
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
from typing import ParamSpec, TypeVar

from flask import current_app, g, request

from watchlog.core.errors import Forbidden, InvalidSetting, Unauthorized
from watchlog.core.schema import is_safe_id
from watchlog.core.settings import Settings

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
RANK = {"ingest": 0, "reader": 1, "admin": 2}
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
ANY_USER = "*"


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class Principal:
    role: str  # ingest | reader | admin
    device_id: str | None = None  # set for a per-device token
    user_ids: frozenset[str] | None = None  # users a device may write for; None: any
    # Who it is, for rate limits: the role and a digest prefix of the credential (never
    # the header's text, so spacing or the scheme's case make no new identity).
    key: str = ""

    def may_write(self, device_id: str, user_key: str) -> None:
        """Raise ``Forbidden`` unless this principal may store a log of that device and user.

        ``user_key`` is ``str(user_id)``, the key the store files the log under (so the
        user 7 and "7" are one user, as in the store).
        """
        if self.device_id is not None and device_id != self.device_id:
            raise Forbidden(f"device_id: this token may only write for {self.device_id!r}",
                            field="device_id")
        if self.user_ids is not None and user_key not in self.user_ids:
            if not self.user_ids:
                raise Forbidden("user_id: this device token is bound to no user; give its "
                                "line in WATCHLOG_DEVICE_TOKENS_FILE the owner's user_id",
                                field="user_id")
            raise Forbidden("user_id: this device token may only write for its owner "
                            f"({', '.join(sorted(self.user_ids))})", field="user_id")


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
        return self.resolve(request.headers.get("Authorization", ""), request.remote_addr)

    def resolve(self, header: str, remote_addr: str | None) -> Principal:
        """The principal of an ``Authorization`` header (``Unauthorized`` when none)."""
        if not self.enabled:
            return Principal("admin", key="addr:" + (remote_addr or "-"))
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing credentials: send 'Authorization: Bearer <token>'")
        d = digest(token.strip())
        role = self.role_of(d)
        if role is not None:
            return Principal(role, key=f"{role}:{d[:8].hex()}")
        device = self.devices.get(d)
        if device is not None:
            return device
        raise Unauthorized("invalid credentials")

    def role_of(self, d: bytes) -> str | None:
        """The role of the key whose digest is ``d`` (ingest, reader, admin), else None.

        Every known key is compared (constant time), whichever matches.
        """
        role = None
        for known, r in self.roles:
            if hmac.compare_digest(known, d):
                role = r
        return role


LINE_FORMAT = "'device_id <64 hex digits of sha256(token)> user_id[,user_id...]' (or '*')"


def _device_tokens(path: str) -> dict[bytes, Principal]:
    """Read ``device_id <sha256 hex> [users]`` lines; a malformed line stops the start-up."""
    out: dict[bytes, Principal] = {}
    if not path:
        return out
    unbound = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        try:
            users = _users(parts)
        except ValueError:
            # Name the line, never echo it: it may hold a token pasted in clear.
            raise InvalidSetting(f"{path}:{n}: expected {LINE_FORMAT}") from None
        if users == frozenset():
            unbound.append(n)
        out[bytes.fromhex(parts[1])] = Principal("ingest", parts[0], users,
                                                  key="device:" + parts[0])
    if unbound:
        log.warning("%s: device tokens on lines %s name no user_id: their logs are refused "
                    "(403) until the owner's user_id is added", path,
                    ", ".join(map(str, unbound)))
    return out


def _users(parts: list[str]) -> frozenset[str] | None:
    """Check a line's fields; return its users: none (two fields), some, or None (``*``)."""
    if (len(parts) not in (2, 3) or not is_safe_id(parts[0])
            or not _SHA256_HEX.fullmatch(parts[1])):
        raise ValueError("malformed line")
    if len(parts) == 2:
        return frozenset()  # the older form: bound to no user, refused (fail closed)
    if parts[2] == ANY_USER:
        return None
    users = frozenset(parts[2].split(","))
    if not all(is_safe_id(u) for u in users):
        raise ValueError("malformed user_id")
    return users


def check_role(p: Principal, role: str) -> None:
    """Raise ``Forbidden`` unless ``p``'s role is at least ``role`` (readers never write)."""
    if RANK[p.role] < RANK[role]:
        raise Forbidden(f"this needs the {role} role; your credentials have {p.role}")
    if role == "ingest" and p.role == "reader":
        raise Forbidden("readers cannot write logs")


def requires(role: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Let the view run only for a principal whose role is at least ``role``."""

    def wrap(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            p = current_app.extensions["watchlog_auth"].principal()
            check_role(p, role)
            g.principal = p
            return view(*args, **kwargs)

        return checked

    return wrap
