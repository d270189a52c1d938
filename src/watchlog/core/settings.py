"""Every setting of watchlog, read once from the environment into a frozen, typed object.

``Settings`` is the one table: each field is a ``WATCHLOG_*`` variable with its type, its
default and its meaning. ``SETTINGS_DOC`` (and from it the README's settings table, checked by
tests/core/test_settings.py) is derived from the fields, so the two cannot drift. Values are parsed
into their types when read: a number is an ``int`` or ``float``, a choice a ``Literal`` (a
value outside it is refused at start, naming the variable), "none" an optional ``None``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from watchlog.core.errors import InvalidSetting

# WATCHLOG_AUTH: only these turn authentication off; any other value (a typo) keeps it on.
AUTH_OFF = ("off", "false", "0", "no")


def setting(default: Any, doc: str, *, secret: bool = False) -> Any:
    """A field of ``Settings``: its default, its meaning (the README's), repr hidden if secret."""
    return field(default=default, repr=not secret, metadata={"doc": doc})


def _read(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None and name.endswith(("_PASSWORD", "_TOKEN", "_KEY", "_SECRET")):
        path = env.get(name + "_FILE")
        if path:
            return Path(path).read_text().strip()
    return value


# The folder `watchlog up` runs in (state, logs, pids, credentials), relative to where it runs.
DEFAULT_STATE_DIR = ".watchlog"

@dataclass(frozen=True)
class Settings:
    """Every setting, typed; build it with ``Settings.from_env()``."""

    redis_url: str = setting(
        "redis://127.0.0.1:7000", "Redis Cluster startup node(s), comma-separated; the rest are "
        "discovered")
    redis_username: str = setting("", "ACL user of the apps (empty: no AUTH)")
    redis_password: str = setting("", "its password (or WATCHLOG_REDIS_PASSWORD_FILE)", secret=True)
    redis_timeout: float = setting(2.0, "socket timeout of every Redis call, seconds")
    retention_days: int = setting(30, "days a log is kept after the end of its UTC day")
    wait_replicas: int | Literal["auto"] = setting(
        "auto", "replicas that must confirm a write before it is acknowledged, else 503; 0: "
        "acknowledge without replicas (loss possible on failover); auto: 1 when the cluster has "
        "replicas (failed ones count; `watchlog up` sets it explicitly)")
    wait_timeout_ms: int = setting(
        200, "longest wait for those replicas, milliseconds (a write gets two waits, then 503)")
    max_batch: int = setting(1000, "most logs in one POST")
    max_body_bytes: int = setting(
        4 * 1024 * 1024, "largest request body, bytes (after decompression)")
    max_page: int = setting(1000, "largest page of a query (limit)")
    max_range_days: int = setting(31, "widest time range of a query, summary or export, days")
    host: str = setting("127.0.0.1", "address the APIs listen on")
    producer_port: int = setting(5001, "producer API port")
    consumer_port: int = setting(5002, "consumer API port")
    server: Literal["granian", "gunicorn"] = setting(
        "granian", "WSGI server of the APIs: granian or gunicorn (gthread)")
    workers: int = setting(2, "worker processes per API")
    threads: int = setting(
        2, "request threads per worker: requests served at once (more when injecting long "
        "delays)")
    request_timeout: int = setting(
        30, "gunicorn: a worker silent this long is recycled; granian: grace to finish at stop, "
        "s")
    producer_url: str = setting(
        "http://127.0.0.1:5001", "where the CLI and simulator find the producer")
    consumer_url: str = setting("http://127.0.0.1:5002", "where the CLI finds the consumer")
    auth: Literal["on", "off"] = setting(
        "on", "on: tokens required; off: open APIs (warned at start and on /ready)")
    ingest_token: str = setting(
        "", "shared bearer token(s) for watches, comma-separated to rotate (kept hashed in "
        "memory)", secret=True)
    device_tokens_file: str = setting(
        "", "file of `device_id sha256(token) user_id[,user_id...]` lines: per-device tokens, "
        "each bound to its owner(s) (docs/security.md)")
    reader_key: str = setting(
        "", "API key(s) with the reader role (queries, reports, extraction)", secret=True)
    admin_key: str = setting("", "API key(s) with the admin role (also /admin/faults)", secret=True)
    session_secret: str = setting(
        "", "signs the reports page's session cookies and form tokens (or "
        "WATCHLOG_SESSION_SECRET_FILE); empty: /reports/ answers 503, never a default key",
        secret=True)
    session_lifetime: int = setting(
        28800, "seconds a sign-in to the reports page lasts (its cookie is refused after that)")
    proxy_hops: int = setting(
        0, "reverse proxies in front of the APIs whose X-Forwarded-For/-Proto/-Host are trusted "
        "(0: none, the headers are ignored; 1: the TLS proxy of docs/security.md)")
    credentials_file: str = setting(
        "", "env file the clients read tokens from (default <state dir>/credentials.env)")
    rate_limit: str = setting(
        "2000/second", "producer requests per token and worker process (`limits` syntax, e.g. "
        "100/second)")
    consumer_rate_limit: str = setting(
        "50/second", "consumer summaries, reports, exports and extraction per credential and "
        "worker process")
    body_timeout: float = setting(
        30.0, "longest time to receive a request body, seconds (0: unbounded); over it: 408")
    body_min_rate: int = setting(
        16384, "slowest accepted request body after its first 2 s, bytes/s (0: no minimum); else "
        "408")
    send_timeout: float = setting(
        300.0, "longest time to send a streamed response (export), seconds (0: unbounded)")
    fault_preset: str = setting("none", "none | seed (uniform 0.5-2 s delay, 20% 500s on reads)")
    fault_delay_p: float = setting(0.0, "probability of an injected delay")
    fault_delay: str = setting(
        "uniform:0.5:2", "delay distribution: fixed:S | uniform:A:B | lognormal:MEDIAN:SIGMA, "
        "seconds")
    fault_abort_p: float = setting(0.0, "probability of an injected error response")
    fault_abort_status: Literal[500, 502, 503, 504] = setting(
        500, "its status: 500, 502, 503 or 504")
    fault_abort_phase: Literal["before", "after", "both"] = setting(
        "before", "producer writes: abort before, after the commit, or either (both)")
    fault_retry_after: int | None = setting(None, "Retry-After seconds sent with injected errors")
    fault_routes: str = setting(
        "", "comma-separated routes faults apply to (empty: all but health, metrics, docs, "
        "admin)")
    fault_seed: str = setting("", "seed of the fault random source (replayable runs)")
    extract_visibility_s: float = setting(
        30.0, "seconds before an unacknowledged extraction batch is redelivered")
    max_extractors: int = setting(64, "most extractors at once; creating one more answers 409")
    state_dir: str = setting(
        DEFAULT_STATE_DIR, "native launcher: state, logs, pids, data; the CLI's credentials and "
        "default outputs")
    log_level: str = setting("INFO", "log level of the services")

    def __post_init__(self) -> None:
        # Values given as text (Settings(wait_replicas="1"), as in the environment) are parsed
        # like the environment's: every field holds its type whichever way it was built.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str):
                object.__setattr__(self, f.name, parse(f.name, value))
        if self.proxy_hops < 0:
            raise InvalidSetting(f"WATCHLOG_PROXY_HOPS={self.proxy_hops}: 0 or more proxies")
        if self.wait_timeout_ms >= self.redis_timeout * 1000:
            raise InvalidSetting(f"WATCHLOG_WAIT_TIMEOUT_MS={self.wait_timeout_ms} must be below "
                                 f"WATCHLOG_REDIS_TIMEOUT ({self.redis_timeout} s): a longer wait "
                                 "would end as a socket timeout on every write")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read every ``WATCHLOG_*`` variable (unset: the field's default)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = _read(env, "WATCHLOG_" + f.name.upper())
            if raw is not None:
                values[f.name] = parse(f.name, raw)
        values.update(overrides)
        # Each value was converted to its field's type by _convert, which mypy cannot follow
        # through a dict of mixed values.
        return cls(**values)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> Settings:
        # Field names and types are checked by dataclasses at run time, not here.
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def auth_enabled(self) -> bool:
        return self.auth == "on"


@cache
def _types() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


def parse(name: str, raw: str) -> Any:
    """Parse the text of setting ``name`` into its field's type, or refuse it by name."""
    kind = _types()[name]
    var = "WATCHLOG_" + name.upper()
    if name == "auth":  # fail safe: only an explicit "off" opens the APIs
        return "off" if raw.strip().lower() in AUTH_OFF else "on"
    options = typing.get_args(kind) if _is_union(kind) else (kind,)
    for option in options:
        if option is type(None):
            if raw.strip().lower() in ("", "none"):
                return None
        elif typing.get_origin(option) is Literal:
            choices = typing.get_args(option)
            value: object = int(raw) if raw.strip().isdigit() and isinstance(choices[0], int) \
                else raw.strip()
            if value in choices:
                return value
        elif option in (int, float):
            if option is int and len(options) > 1 and not raw.strip().isdigit():
                continue  # a count or seconds beside a word ("auto", empty): 0, 1, ... only
            try:
                return option(raw)
            except ValueError:
                continue
        elif option is str:
            return raw
    if kind in (int, float):
        raise InvalidSetting(f"{var}={raw!r} is not a number")
    raise InvalidSetting(f"{var}={raw!r}: {_expected(kind)}")


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def _expected(kind: Any) -> str:
    words = []
    for option in typing.get_args(kind) if _is_union(kind) else (kind,):
        if typing.get_origin(option) is Literal:
            words += [str(c) for c in typing.get_args(option)]
        elif option is int:
            words.append("a number (0, 1, ...)")
        elif option is type(None):
            words.append("empty")
    return "one of " + ", ".join(words) if len(words) > 1 else words[0]


def _shown(value: object) -> str:
    """A default as the README shows it."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


# (variable, default, meaning) — one row per setting, in README order, from the fields.
SETTINGS_DOC: tuple[tuple[str, str, str], ...] = tuple(
    ("WATCHLOG_" + f.name.upper(), _shown(f.default), f.metadata["doc"])
    for f in dataclasses.fields(Settings))


def readme_table() -> str:
    """The README's settings table, row for row from ``SETTINGS_DOC``."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, doc in SETTINGS_DOC:
        shown = f" `{default}` " if default else " "
        rows.append(f"| `{name}` |{shown}| {doc} |")
    return "\n".join(rows) + "\n"
