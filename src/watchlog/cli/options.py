"""What every ``watchlog`` command shares: its options and how a failure ends it.

A command module takes ``--state-dir``, the API URLs and ``--json`` from here, and wraps its
work in ``failures_as_click`` so an expected failure is one red line and exit 1, never a
traceback. Defaults come from ``watchlog.core.settings`` (the one table of settings).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import click
import redis

from watchlog.clients.http import StateDir, find_state_dir
from watchlog.core.errors import WatchlogError
from watchlog.core.settings import DEFAULT_STATE_DIR, Settings

F = TypeVar("F", bound=Callable[..., object])  # a command function, options added


@contextmanager
def failures_as_click() -> Iterator[None]:
    """The CLI's one error handler: a failure watchlog names (``WatchlogError``), Redis's or
    the system's (``OSError``) ends the command with its message in red and exit 1."""
    try:
        yield
    except (WatchlogError, redis.RedisError, OSError) as e:
        raise click.ClickException(str(e)) from e


def state_dir_option(f: F) -> F:
    """Add ``--state-dir`` (env ``WATCHLOG_STATE_DIR``): the folder ``watchlog up`` runs in."""
    return click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=DEFAULT_STATE_DIR, show_default=True, envvar="WATCHLOG_STATE_DIR",
                        help="Where data, logs, pids and credentials live.")(f)


def credentials_option(f: F) -> F:
    """Add ``--state-dir``; the command receives the ``StateDir`` found (``state``)."""
    def find(_ctx: click.Context, _param: click.Parameter, value: str | None) -> StateDir:
        return find_state_dir(value)

    return click.option(
        "--state-dir", "state", type=click.Path(file_okay=False), default=None,
        callback=find, help="Where `watchlog up` keeps credentials.env (default: "
        "WATCHLOG_STATE_DIR, then .watchlog in this folder or a parent, then the user's "
        "state folder).")(f)


def producer_url_option(name: str = "--producer-url") -> Callable[[F], F]:
    """Add the producer API's URL (env ``WATCHLOG_PRODUCER_URL``)."""
    return click.option(name, "producer_url" if name != "--url" else "url",
                        envvar="WATCHLOG_PRODUCER_URL", default=Settings.producer_url,
                        show_default=True, help="Producer API (env WATCHLOG_PRODUCER_URL).")


def consumer_url_option(name: str = "--consumer-url") -> Callable[[F], F]:
    """Add the consumer API's URL (env ``WATCHLOG_CONSUMER_URL``)."""
    return click.option(name, "consumer_url" if name != "--url" else "url",
                        envvar="WATCHLOG_CONSUMER_URL", default=Settings.consumer_url,
                        show_default=True, help="Consumer API (env WATCHLOG_CONSUMER_URL).")


def random_seed_option(help: str) -> Callable[[F], F]:
    """Add ``--random-seed`` (``--seed``, its older name, still works): a replayable run."""
    return click.option("--random-seed", "--seed", "random_seed", type=int, default=None,
                        help=help)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")(f)
