"""The resilient HTTP client of every watchlog CLI: timeouts, bounded retries, credentials.

Retries use exponential backoff with *full jitter* (a uniform sleep in ``[0, base * 2**n]``,
capped), so many clients that failed together do not retry together. Both the number of
attempts and the total time are bounded: a caller never waits longer than ``deadline``
seconds, however the server answers. Only failures that may pass are retried (connection
errors, timeouts, 429 and 5xx gateway/availability statuses); any other 4xx is the
caller's to fix and is returned at once. A ``Retry-After`` header is honoured.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from watchlog.core.credentials import FILENAME, read_env_file
from watchlog.core.errors import GaveUp, NoCredentials
from watchlog.core.settings import DEFAULT_STATE_DIR

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_ERRORS = (httpx.TransportError,)  # connect/read/write errors, timeouts, protocol errors
ROLE_VARS = {
    "ingest": ("WATCHLOG_INGEST_TOKEN",),
    "reader": ("WATCHLOG_READER_KEY", "WATCHLOG_ADMIN_KEY"),
    "admin": ("WATCHLOG_ADMIN_KEY",),
}


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, total seconds, and the backoff's base and cap."""

    attempts: int = 8
    deadline: float = 30.0
    base: float = 0.1
    cap: float = 5.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Return a full-jitter delay for the ``retry``-th retry (0-based)."""
        return rng.uniform(0, min(self.cap, self.base * 2**retry))


def retry_after(response: httpx.Response) -> float | None:
    """Return the ``Retry-After`` delay in seconds (number or HTTP date), if any."""
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Client:
    """An ``httpx.Client`` with a bearer token, timeouts and bounded retries (thread-safe)."""

    def __init__(self, base_url: str, token: str | None = None, *,
                 policy: RetryPolicy | None = None, connect_timeout: float = 2.0,
                 read_timeout: float = 10.0, random_seed: int | None = None,
                 sleep: Callable[[float], None] = time.sleep, pool: int = 16,
                 on_retry: Callable[[], None] | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                 timeout=timeout, limits=limits)
        self.policy = policy or RetryPolicy()
        self.rng = random.Random(random_seed)
        self.sleep = sleep
        self.on_retry = on_retry
        self.attempts = 0
        self.retries = 0
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request, retrying what may pass; return the first final response."""
        def send(left: float) -> httpx.Response:
            return self.http.request(method, path, timeout=self._timeout(left), **kwargs)

        return self._with_retries(send, method, path)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """Open a streamed response with retries (a failure mid-body is the caller's)."""

        def open_(left: float) -> httpx.Response:
            req = self.http.build_request(method, path, timeout=self._timeout(left), **kwargs)
            resp = self.http.send(req, stream=True)
            if resp.status_code in RETRY_STATUSES:
                resp.read()
                resp.close()
            return resp

        resp = self._with_retries(open_, method, path)
        try:
            yield resp
        finally:
            resp.close()

    def _timeout(self, left: float) -> httpx.Timeout:
        """Trim this attempt's timeouts so that it cannot outlast the time budget."""
        t = self.http.timeout
        return httpx.Timeout(min(t.read or left, left), connect=min(t.connect or left, left),
                             write=min(t.write or left, left), pool=min(t.pool or left, left))

    def _count(self, retry: bool) -> None:
        with self._lock:
            self.attempts += 1
            self.retries += retry
        if retry and self.on_retry is not None:
            self.on_retry()

    def _with_retries(self, send: Callable[[float], httpx.Response], method: str, path: str
                      ) -> httpx.Response:
        start = time.monotonic()
        for n in range(self.policy.attempts):
            self._count(n > 0)
            resp, why = self._attempt(send, self.policy.deadline - (time.monotonic() - start))
            if resp is not None and resp.status_code not in RETRY_STATUSES:
                return resp
            delay = self._delay(n, resp)
            left = self.policy.deadline - (time.monotonic() - start)
            if n + 1 >= self.policy.attempts or delay >= left:
                raise GaveUp(f"{method} {path}: {why} (gave up after {n + 1} attempts, "
                             f"{time.monotonic() - start:.1f} s)", resp)
            log.debug("%s %s: %s; retry in %.2f s", method, path, why, delay)
            self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _attempt(send: Callable[[float], httpx.Response], left: float
                 ) -> tuple[httpx.Response | None, str]:
        try:
            resp = send(max(left, 0.05))
        except RETRY_ERRORS as e:
            return None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return resp, f"HTTP {resp.status_code}"

    def _delay(self, n: int, resp: httpx.Response | None) -> float:
        hinted = retry_after(resp) if resp is not None else None
        with self._lock:
            jitter = self.policy.backoff(n, self.rng)
        return jitter if hinted is None else hinted


def error_message(resp: httpx.Response) -> str:
    """Return the server's error message (its JSON ``message``) or the status line."""
    try:
        doc = resp.json()
        if isinstance(doc, dict) and doc.get("message"):
            return f"HTTP {resp.status_code}: {doc['message']}"
    except ValueError:
        pass
    return f"HTTP {resp.status_code} {resp.reason_phrase}".strip()


STATE_DIRNAME = DEFAULT_STATE_DIR


@dataclass(frozen=True)
class StateDir:
    """Where the CLI found (or would look for) its state, and every place it looked."""

    path: Path | None
    looked: tuple[str, ...]

    def describe(self) -> str:
        return "; ".join(self.looked)


def user_state_dir() -> Path:
    """Return the user's state folder of watchlog (``~/.local/state/watchlog`` on Linux)."""
    import platformdirs

    return platformdirs.user_state_path("watchlog")


def find_state_dir(explicit: str | Path | None = None, env: Mapping[str, str] | None = None,
                   cwd: Path | None = None) -> StateDir:
    """Find the state directory: ``--state-dir``, ``WATCHLOG_STATE_DIR``, then ``.watchlog``
    in the current folder or a parent, then the user's state folder.

    An explicit choice (option or variable) is taken as it is; the searched places count
    only when they hold a credentials file.
    """
    env = os.environ if env is None else env
    if explicit:
        return StateDir(Path(explicit), (f"--state-dir {explicit}",))
    if env.get("WATCHLOG_STATE_DIR"):
        return StateDir(Path(env["WATCHLOG_STATE_DIR"]),
                        (f"WATCHLOG_STATE_DIR={env['WATCHLOG_STATE_DIR']}",))
    here = (cwd or Path.cwd()).resolve()
    places = [d / STATE_DIRNAME for d in (here, *here.parents)] + [user_state_dir()]
    for place in places:
        if (place / FILENAME).is_file():
            return StateDir(place, (str(place),))
    looked = ("--state-dir (not given)", "WATCHLOG_STATE_DIR (not set)",
              f"{here / STATE_DIRNAME} and every parent's {STATE_DIRNAME}",
              str(user_state_dir()))
    return StateDir(None, looked)


def credentials_path(env: Mapping[str, str] | None = None,
                     state: StateDir | None = None) -> Path | None:
    """Return the credentials file the clients read (None: none was found)."""
    env = os.environ if env is None else env
    explicit = env.get("WATCHLOG_CREDENTIALS_FILE")
    if explicit:
        return Path(explicit)
    state = state or find_state_dir(env=env)
    return None if state.path is None else state.path / FILENAME


def token_for(role: str, env: Mapping[str, str] | None = None,
              state: StateDir | None = None) -> str | None:
    """Find the token of a role: the environment first, then the credentials file."""
    env = os.environ if env is None else env
    names = ROLE_VARS[role]
    for name in names:
        if env.get(name):
            return env[name]
    path = credentials_path(env, state)
    try:
        values = read_env_file(path) if path is not None and path.is_file() else {}
    except OSError as e:
        log.warning("cannot read credentials file %s: %s", path, e)
        return None
    return next((values[n] for n in names if values.get(n)), None)


def require_token(role: str, env: Mapping[str, str] | None = None,
                  state: StateDir | None = None) -> str | None:
    """Return the role's token, or raise ``NoCredentials`` naming where the lookup went.

    With ``WATCHLOG_AUTH=off`` (open APIs) a missing token is fine: None is returned.
    """
    env = os.environ if env is None else env
    state = state or find_state_dir(env=env)
    token = token_for(role, env, state)
    if token or env.get("WATCHLOG_AUTH", "on").strip().lower() in ("off", "false", "0", "no"):
        return token
    names = " or ".join(ROLE_VARS[role])
    where = env.get("WATCHLOG_CREDENTIALS_FILE") or state.describe()
    if state.path is not None and not env.get("WATCHLOG_CREDENTIALS_FILE"):
        where = f"{state.path / FILENAME} (found by {state.describe()})"
    raise NoCredentials(
        f"no {role} key found: {names} is not set and no credentials file holds it. "
        f"Looked in: {where}. Run the command from the folder of `watchlog up` (or below it), "
        f"or pass --state-dir / set WATCHLOG_STATE_DIR.")
