"""The secrets of a native deployment: API tokens and Redis ACL passwords.

They are generated once per state directory and kept in ``credentials.env`` (mode 0600),
the only place they are written in clear; the Redis ACL file stores their SHA-256 only.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from watchlog.core.errors import InvalidSetting

log = logging.getLogger(__name__)

FILENAME = "credentials.env"
APP_USER = "watchlog"

# Field of Credentials -> its variable in credentials.env.
_VARS = {
    "ingest_token": "WATCHLOG_INGEST_TOKEN",
    "reader_key": "WATCHLOG_READER_KEY",
    "admin_key": "WATCHLOG_ADMIN_KEY",
    "redis_app_password": "WATCHLOG_REDIS_PASSWORD",
    "redis_admin_password": "WATCHLOG_REDIS_ADMIN_PASSWORD",
    "redis_exporter_password": "WATCHLOG_REDIS_EXPORTER_PASSWORD",
    "session_secret": "WATCHLOG_SESSION_SECRET",
}
# Added after the first files were written: a file without it gets one appended.
_ADDED = {"session_secret"}


def _token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Credentials:
    """Every secret the launcher hands out; ``repr`` never shows them."""

    ingest_token: str = field(default_factory=_token, repr=False)
    reader_key: str = field(default_factory=_token, repr=False)
    admin_key: str = field(default_factory=_token, repr=False)
    redis_app_password: str = field(default_factory=_token, repr=False)
    redis_admin_password: str = field(default_factory=_token, repr=False)
    redis_exporter_password: str = field(default_factory=_token, repr=False)
    session_secret: str = field(default_factory=_token, repr=False)  # the reports page's

    def app_env(self) -> dict[str, str]:
        """Return the ``WATCHLOG_*`` variables the apps and clients need."""
        return {
            "WATCHLOG_INGEST_TOKEN": self.ingest_token,
            "WATCHLOG_READER_KEY": self.reader_key,
            "WATCHLOG_ADMIN_KEY": self.admin_key,
            "WATCHLOG_REDIS_USERNAME": APP_USER,
            "WATCHLOG_REDIS_PASSWORD": self.redis_app_password,
            "WATCHLOG_SESSION_SECRET": self.session_secret,
        }

    def to_env_text(self) -> str:
        """Render the ``credentials.env`` file."""
        lines = ["# watchlog native credentials: generated once, keep private (mode 0600)"]
        for name, var in _VARS.items():
            lines.append(f"{var}={getattr(self, name)}")
            if name == "admin_key":
                lines.append(f"WATCHLOG_REDIS_USERNAME={APP_USER}")
        return "\n".join(lines) + "\n"


def read_env_file(path: Path) -> dict[str, str]:
    """Parse ``KEY=value`` lines, skipping blanks and ``#`` comments."""
    values: dict[str, str] = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        values[key] = value.strip().strip("'\"")
    return values


def load_or_create(state_dir: Path) -> Credentials:
    """Read ``<state_dir>/credentials.env``, or generate and write it (0600)."""
    path = Path(state_dir) / FILENAME
    if path.exists():
        return _from_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    creds = Credentials()
    try:
        # O_EXCL: never overwrite a file another launcher wrote a moment ago.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _from_file(path)
    with os.fdopen(fd, "w") as f:
        f.write(creds.to_env_text())
    log.info("wrote new credentials to %s", path)
    return creds


def _from_file(path: Path) -> Credentials:
    values = read_env_file(path)
    missing = [var for name, var in _VARS.items() if not values.get(var) and name not in _ADDED]
    if missing:
        raise InvalidSetting(f"{path} lacks {', '.join(missing)}; delete it to generate new ones")
    added = [name for name in _ADDED if not values.get(_VARS[name])]
    if added:  # a file from before these secrets existed: keep its keys, add the new ones
        with path.open("a") as f:
            for name in added:
                values[_VARS[name]] = _token()
                f.write(f"{_VARS[name]}={values[_VARS[name]]}\n")
        log.info("added %s to %s", ", ".join(_VARS[n] for n in added), path)
    return Credentials(**{name: values[var] for name, var in _VARS.items()})
