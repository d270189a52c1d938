"""Every setting of watchlog, read once from the environment into a frozen object.

Each field names its ``WATCHLOG_*`` variable, its default and its unit. The README's
settings table is generated from ``SETTINGS_DOC`` below, so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from watchlog.core.errors import InvalidSetting

# (variable, default, meaning) — one row per setting, in README order.
SETTINGS_DOC: tuple[tuple[str, str, str], ...] = (
    ("WATCHLOG_REDIS_URL", "redis://127.0.0.1:7000",
     "Redis Cluster seed node(s), comma-separated; the rest are discovered"),
    ("WATCHLOG_REDIS_USERNAME", "", "ACL user of the apps (empty: no AUTH)"),
    ("WATCHLOG_REDIS_PASSWORD", "", "its password (or WATCHLOG_REDIS_PASSWORD_FILE)"),
    ("WATCHLOG_REDIS_TIMEOUT", "2.0", "socket timeout of every Redis call, seconds"),
    ("WATCHLOG_RETENTION_DAYS", "30", "days a log is kept after the end of its UTC day"),
    ("WATCHLOG_WAIT_REPLICAS", "auto",
     "replicas that must confirm a write before it is acknowledged, else 503; 0: acknowledge "
     "without replicas (loss possible on failover); auto: 1 when the cluster has replicas "
     "(failed ones count; `watchlog up` sets it explicitly)"),
    ("WATCHLOG_WAIT_TIMEOUT_MS", "200",
     "longest wait for those replicas, milliseconds (a write gets two waits, then 503)"),
    ("WATCHLOG_MAX_BATCH", "1000", "most logs in one POST"),
    ("WATCHLOG_MAX_BODY_BYTES", "4194304", "largest request body, bytes (after decompression)"),
    ("WATCHLOG_MAX_PAGE", "1000", "largest page of a query (limit)"),
    ("WATCHLOG_MAX_RANGE_DAYS", "31", "widest time range of a query, summary or export, days"),
    ("WATCHLOG_HOST", "127.0.0.1", "address the APIs listen on"),
    ("WATCHLOG_PRODUCER_PORT", "5001", "producer API port"),
    ("WATCHLOG_CONSUMER_PORT", "5002", "consumer API port"),
    ("WATCHLOG_SERVER", "granian", "WSGI server of the APIs: granian or gunicorn (gthread)"),
    ("WATCHLOG_WORKERS", "2", "worker processes per API"),
    ("WATCHLOG_THREADS", "2",
     "request threads per worker: requests served at once (more when injecting long delays)"),
    ("WATCHLOG_REQUEST_TIMEOUT", "30",
     "gunicorn: a worker silent this long is recycled; granian: grace to finish at stop, s"),
    ("WATCHLOG_PRODUCER_URL", "http://127.0.0.1:5001",
     "where the CLI and simulator find the producer"),
    ("WATCHLOG_CONSUMER_URL", "http://127.0.0.1:5002", "where the CLI finds the consumer"),
    ("WATCHLOG_AUTH", "on", "on: tokens required; off: open APIs (warned at start and on /ready)"),
    ("WATCHLOG_INGEST_TOKEN", "",
     "shared bearer token(s) for watches, comma-separated to rotate (kept hashed in memory)"),
    ("WATCHLOG_DEVICE_TOKENS_FILE", "",
     "file of `device_id sha256(token) user_id[,user_id...]` lines: per-device tokens, "
     "each bound to its owner(s) (docs/security.md)"),
    ("WATCHLOG_READER_KEY", "", "API key(s) with the reader role (queries, reports, extraction)"),
    ("WATCHLOG_ADMIN_KEY", "", "API key(s) with the admin role (also /admin/faults)"),
    ("WATCHLOG_CREDENTIALS_FILE", "",
     "env file the clients read tokens from (default <state dir>/credentials.env)"),
    ("WATCHLOG_RATE_LIMIT", "2000/second",
     "producer requests per token and worker process (`limits` syntax, e.g. 100/second)"),
    ("WATCHLOG_CONSUMER_RATE_LIMIT", "50/second",
     "consumer summaries, reports, exports and extraction per credential and worker process"),
    ("WATCHLOG_BODY_TIMEOUT", "30",
     "longest time to receive a request body, seconds (0: unbounded); over it: 408"),
    ("WATCHLOG_BODY_MIN_RATE", "16384",
     "slowest accepted request body after its first 2 s, bytes/s (0: no minimum); else 408"),
    ("WATCHLOG_SEND_TIMEOUT", "300",
     "longest time to send a streamed response (export), seconds (0: unbounded)"),
    ("WATCHLOG_FAULT_PRESET", "none", "none | seed (uniform 0.5-2 s delay, 20% 500s on reads)"),
    ("WATCHLOG_FAULT_DELAY_P", "0", "probability of an injected delay"),
    ("WATCHLOG_FAULT_DELAY", "uniform:0.5:2",
     "delay distribution: fixed:S | uniform:A:B | lognormal:MEDIAN:SIGMA, seconds"),
    ("WATCHLOG_FAULT_ABORT_P", "0", "probability of an injected error response"),
    ("WATCHLOG_FAULT_ABORT_STATUS", "500", "its status: 500, 502, 503 or 504"),
    ("WATCHLOG_FAULT_ABORT_PHASE", "before",
     "producer writes: abort before, after the commit, or either (both)"),
    ("WATCHLOG_FAULT_RETRY_AFTER", "", "Retry-After seconds sent with injected errors"),
    ("WATCHLOG_FAULT_ROUTES", "",
     "comma-separated routes faults apply to (empty: all but health, metrics, docs, admin)"),
    ("WATCHLOG_FAULT_SEED", "", "seed of the fault random source (replayable runs)"),
    ("WATCHLOG_EXTRACT_VISIBILITY_S", "30",
     "seconds before an unacknowledged extraction batch is redelivered"),
    ("WATCHLOG_MAX_EXTRACTORS", "64", "most extractors at once; creating one more answers 409"),
    ("WATCHLOG_STATE_DIR", ".watchlog",
     "native launcher: state, logs, pids, data; the CLI's credentials and default outputs"),
    ("WATCHLOG_LOG_LEVEL", "INFO", "log level of the services"),
)

_DEFAULTS = {name: default for name, default, _ in SETTINGS_DOC}


def _read(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if value is None and name.endswith(("_PASSWORD", "_TOKEN", "_KEY")):
        path = env.get(name + "_FILE")
        if path:
            return Path(path).read_text().strip()
    return _DEFAULTS[name] if value is None else value


@dataclass(frozen=True)
class Settings:
    """The typed view of ``SETTINGS_DOC``; build it with ``Settings.from_env()``."""

    redis_url: str = "redis://127.0.0.1:7000"
    redis_username: str = ""
    redis_password: str = field(default="", repr=False)
    redis_timeout: float = 2.0
    retention_days: int = 30
    wait_replicas: str = "auto"
    wait_timeout_ms: int = 200
    max_batch: int = 1000
    max_body_bytes: int = 4 * 1024 * 1024
    max_page: int = 1000
    max_range_days: int = 31
    host: str = "127.0.0.1"
    producer_port: int = 5001
    consumer_port: int = 5002
    server: str = "granian"
    workers: int = 2
    threads: int = 2
    request_timeout: int = 30
    producer_url: str = "http://127.0.0.1:5001"
    consumer_url: str = "http://127.0.0.1:5002"
    auth: str = "on"
    ingest_token: str = field(default="", repr=False)
    device_tokens_file: str = ""
    reader_key: str = field(default="", repr=False)
    admin_key: str = field(default="", repr=False)
    credentials_file: str = ""
    rate_limit: str = "2000/second"
    consumer_rate_limit: str = "50/second"
    body_timeout: float = 30.0
    body_min_rate: int = 16384
    send_timeout: float = 300.0
    fault_preset: str = "none"
    fault_delay_p: float = 0.0
    fault_delay: str = "uniform:0.5:2"
    fault_abort_p: float = 0.0
    fault_abort_status: int = 500
    fault_abort_phase: str = "before"
    fault_retry_after: str = ""
    fault_routes: str = ""
    fault_seed: str = ""
    extract_visibility_s: float = 30.0
    max_extractors: int = 64
    state_dir: str = ".watchlog"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.wait_replicas != "auto" and not (
                self.wait_replicas.isascii() and self.wait_replicas.isdigit()):
            raise InvalidSetting(f"WATCHLOG_WAIT_REPLICAS={self.wait_replicas!r}: a number of "
                             "replicas (0, 1, ...) or auto")
        if self.wait_timeout_ms >= self.redis_timeout * 1000:
            raise InvalidSetting(f"WATCHLOG_WAIT_TIMEOUT_MS={self.wait_timeout_ms} must be below "
                             f"WATCHLOG_REDIS_TIMEOUT ({self.redis_timeout} s): a longer wait "
                             "would end as a socket timeout on every write")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read every ``WATCHLOG_*`` variable (defaults from ``SETTINGS_DOC``)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = _read(env, "WATCHLOG_" + f.name.upper())
            values[f.name] = _convert(f.type, raw, f.name)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def auth_enabled(self) -> bool:
        return self.auth.strip().lower() not in ("off", "false", "0", "no")


def _convert(kind: object, raw: str, name: str) -> object:
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError:
        raise InvalidSetting(f"WATCHLOG_{name.upper()}={raw!r} is not a number") from None
    return raw
