"""The process facts every layer shares: is a pid alive, the private umask, stop signals."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# The state directory holds personal data (Redis AOF/RDB: every log with its coordinates),
# secrets and logs: its owner's only. Every file and folder the launcher or a process it
# starts creates there is 0600/0700; Redis alone would make them 0644/0755.
UMASK = 0o077


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Create files and folders with ``mask`` for the duration (this process)."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)



def alive(pid: int | None) -> bool:
    """Return True when ``pid`` runs (a zombie counts as dead)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@contextmanager
def stop_on_signals(stop: threading.Event, abort: threading.Event | None = None
                    ) -> Iterator[None]:
    """Turn Ctrl-C/SIGTERM into ``stop``; with ``abort``, a second signal sets it.

    Only the main thread may install handlers: elsewhere (a test's thread) nothing changes.
    """
    def handler(_signum: int, _frame: object) -> None:
        (abort if abort is not None and stop.is_set() else stop).set()

    with handling_signals(handler):
        yield


@contextmanager
def handling_signals(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Give SIGINT and SIGTERM to ``handler`` inside the block; restore the old ones after.

    Only the main thread may install handlers: elsewhere (a test's thread) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
