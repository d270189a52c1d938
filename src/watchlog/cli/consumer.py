"""The internal users' CLI: ``watchlog report``, ``watchlog export`` and ``watchlog extract``.

Every call goes through ``watchlog.clients.http`` (timeouts, bounded retries) with the reader key
from the environment or the credentials file ``watchlog up`` wrote. Failures end in a
red message and a non-zero exit; ``--json`` prints one object for scripts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click
import httpx
import msgspec
from rich.console import Console
from rich.table import Table

from watchlog.cli.options import (
    consumer_url_option,
    credentials_option,
    json_option,
    random_seed_option,
)
from watchlog.clients.http import Client, StateDir, error_message, require_token, user_state_dir
from watchlog.core.errors import GaveUp, NoCredentials
from watchlog.core.process import UMASK, stop_on_signals, umask
from watchlog.core.schema import ACTIVITY_TYPES

if TYPE_CHECKING:
    from rich.progress import Progress

log = logging.getLogger(__name__)
COLUMNS = ("activity", "count", "hours", "km", "kcal", "avg hr", "max hr")


def client(url: str, state: StateDir | None = None,
           sleep: Callable[[float], None] | None = None) -> Client:
    """Return the retrying client with the reader key (fail first if there is none)."""
    try:
        return Client(url, require_token("reader", state=state), sleep=sleep or time.sleep)
    except NoCredentials as e:
        raise click.ClickException(str(e)) from None


def output_root(state: StateDir) -> Path:
    """Where files are written by default: the state directory found, else the user's."""
    return state.path if state.path is not None else user_state_dir()


def get_json(url: str, path: str, params: dict[str, Any], state: StateDir | None = None
             ) -> Any:
    """GET a JSON document, or fail with the server's message."""
    with client(url, state) as c:
        try:
            resp = c.get(path, params={k: v for k, v in params.items() if v is not None})
        except GaveUp as e:
            raise click.ClickException(str(e)) from None
    if resp.status_code >= 400:
        raise click.ClickException(f"GET {path}: {error_message(resp)}")
    return resp.json()


def emit(doc: object) -> None:
    click.echo(msgspec.json.encode(doc).decode())


def figures(name: str, t: dict[str, Any]) -> list[str]:
    """Return a table row of a totals object."""
    avg, top = t.get("avg_heart_rate"), t.get("max_heart_rate")
    return [name, f"{t['count']:,}", f"{t['duration'] / 3600:,.1f}", f"{t['distance']:,.1f}",
            f"{t['calories_burned']:,.0f}", "-" if avg is None else f"{avg:.0f}",
            "-" if top is None else str(top)]


def totals_table(title: str, doc: dict[str, Any], first: tuple[str, ...] = ()) -> Table:
    table = Table(*first, *COLUMNS, title=title)
    for kind, t in sorted(doc["by_type"].items()):
        table.add_row(*[""] * len(first), *figures(kind, t))
    table.add_row(*[""] * len(first), *figures("total", doc["total"]), style="bold")
    return table


@click.group()
def report() -> None:
    """Reports read from the consumer API's aggregates."""


@report.command("daily")
@click.option("--date", "day", default=None, help="UTC day, YYYY-MM-DD (default: today).")
@consumer_url_option("--url")
@credentials_option
@json_option
def daily(day: str | None, url: str, state: StateDir, as_json: bool) -> None:
    """Show one UTC day of the fleet: per activity type, and active users."""
    doc = get_json(url, "/v1/reports/daily", {"date": day}, state)
    if as_json:
        return emit(doc)
    table = totals_table(f"Fleet on {doc['date']} (UTC)", doc)
    table.caption = f"active users: {doc['active_users']:,}"
    Console().print(table)


@report.command("user")
@click.argument("user_id")
@click.option("--from", "start", default=None, help="First day (default: 6 days before --to).")
@click.option("--to", default=None, help="Last day (default: today, UTC).")
@consumer_url_option("--url")
@credentials_option
@json_option
def user(user_id: str, start: str | None, to: str | None, url: str, state: StateDir,
         as_json: bool) -> None:
    """Show a user's totals per day and per activity type."""
    doc = get_json(url, f"/v1/users/{quote(user_id, safe='')}/summary", {"from": start, "to": to},
                   state)
    if as_json:
        return emit(doc)
    table = Table("day", *COLUMNS, title=f"User {doc['user_id']}, {doc['from']} to {doc['to']}")
    for d in doc["days"]:
        for kind, t in sorted(d["by_type"].items()):
            table.add_row(d["date"], *figures(kind, t))
    table.add_row("all", *figures("total", doc["total"]), style="bold")
    Console().print(table)


def end_of_day(value: str | None) -> str | None:
    """Make a bare ``--to`` date include its whole day (the API reads it as midnight)."""
    return f"{value}T23:59:59.999Z" if value is not None and len(value) == 10 else value


def progress(quiet: bool) -> Progress:
    """Return a rich progress display of rows and bytes on stderr."""
    from rich.progress import (
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("{task.description}"),
                    TextColumn("{task.fields[rows]:,} rows"), DownloadColumn(),
                    TransferSpeedColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), disable=quiet)


def download(c: Client, params: dict[str, Any], output: Path, csv: bool,
             quiet: bool = False, rows_of: Callable[[Path], int] | None = None
             ) -> tuple[int, int]:
    """Stream the export into ``output`` (via ``output.part``); return rows and bytes.

    ``rows_of`` counts the rows of a binary file (and refuses a torn one) before the rename.
    """
    part = output.with_name(output.name + ".part")
    try:
        with c.stream("GET", "/v1/activities/export", params=params) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise click.ClickException(f"export: {error_message(resp)}")
            rows, size = _save(resp, part, quiet, header=csv, text=rows_of is None)
            if rows_of is not None:
                rows = rows_of(part)
    except GaveUp as e:
        raise click.ClickException(str(e)) from None
    except httpx.HTTPError as e:
        part.unlink(missing_ok=True)
        raise click.ClickException(f"export interrupted: {e!r}; run it again") from None
    except ValueError as e:  # rows_of: a torn file
        part.unlink(missing_ok=True)
        raise click.ClickException(f"export: {e}; run it again") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, output)
    return rows, size


def _save(resp: httpx.Response, part: Path, quiet: bool, header: bool, text: bool = True
          ) -> tuple[int, int]:
    """Write the body to ``part``; return its rows (a CSV's header is not one) and bytes.

    A binary body (``text`` false: Parquet) has no lines: its rows are counted after."""
    lines = size = 0
    with part.open("wb") as f, progress(quiet) as bar:
        task = bar.add_task(f"export to {part.name[:-5]}", rows=0, total=None)
        for chunk in resp.iter_bytes():
            f.write(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n") if text else 0
            bar.update(task, completed=size, rows=max(lines - header, 0))
        f.flush()
        os.fsync(f.fileno())
    return max(lines - header, 0), size


@click.command()
@click.option("--from", "start", default=None, help="Start: date or ISO time (default: 24 h ago).")
@click.option("--to", default=None, help="End: date (whole day) or ISO time (default: now).")
@click.option("--activity-type", type=click.Choice(ACTIVITY_TYPES), default=None)
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson", "parquet"]),
              default="ndjson", show_default=True, help="parquet: docs/formats.md.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Default: <state dir>/exports/logs-<from>-<to>.<format>.")
@click.option("--force", is_flag=True, help="Overwrite an existing Parquet file.")
@consumer_url_option("--url")
@credentials_option
@json_option
def export(start: str | None, to: str | None, activity_type: str | None, fmt: str,
           output: Path | None, force: bool, url: str, state: StateDir, as_json: bool
           ) -> None:
    """Stream every log of a time range to a file (written as FILE.part, then renamed)."""
    params = {"from": start, "to": end_of_day(to), "activity_type": activity_type, "format": fmt}
    params = {k: v for k, v in params.items() if v is not None}
    # Exports hold personal data (coordinates): private to their owner, whatever the
    # shell's umask (0700 folders, 0600 files), like everything under the state dir.
    with umask(UMASK):
        if output is None:
            name = f"logs-{start or 'last'}-{to or 'now'}.{fmt}"
            output = output_root(state) / "exports" / name
        if fmt == "parquet" and output.exists() and not force:
            raise click.ClickException(f"{output} exists; --force overwrites it")
        output.parent.mkdir(parents=True, exist_ok=True)
        rows_of = None
        if fmt == "parquet":
            from watchlog.api.consumer.parquet import rows_in

            rows_of = rows_in
        with client(url, state) as c:
            rows, size = download(c, params, output, fmt == "csv", quiet=as_json,
                                  rows_of=rows_of)
    if as_json:
        emit({"rows": rows, "bytes": size, "file": str(output)})


def sleep_unless(stop: threading.Event) -> Callable[[float], None]:
    """A retry wait that gives up as soon as ``stop`` is set."""
    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise GaveUp("stopped while waiting to retry")

    return sleep


@click.command()
@click.option("--name", required=True, help="Extractor name (created if missing, else reused).")
@click.option("--follow", is_flag=True, help="Keep polling after the feed is drained.")
@click.option("--interval", type=click.FloatRange(0), default=15.0, show_default=True,
              help="Seconds between polls that found nothing (with --follow).")
@click.option("-o", "--output", "--out", "out_dir",
              type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Default: <state dir>/extracts/NAME.")
@click.option("--format", "fmt", type=click.Choice(["ndjson", "parquet"]), default="ndjson",
              show_default=True, help="parquet: a dataset DIR/date=YYYY-MM-DD/part-*.parquet.")
@click.option("--compact", is_flag=True,
              help="parquet: merge a complete day's files into one (atomic swap).")
@click.option("--max", "max_items", type=click.IntRange(1, 1000), default=500,
              show_default=True, help="Logs per batch.")
@click.option("--visibility-timeout", type=click.IntRange(1, 3600), default=None,
              help="Seconds before an unacknowledged batch is redelivered (server default).")
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Drop this share of batches on purpose (redelivered after the timeout).")
@random_seed_option("Random seed of --drop-rate's decisions.")
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address /metrics listens on (0.0.0.0 to let another host scrape it).")
@consumer_url_option("--url")
@credentials_option
@json_option
def extract(name: str, follow: bool, interval: float, out_dir: Path | None, fmt: str,
            compact: bool, max_items: int, visibility_timeout: int | None, drop_rate: float,
            random_seed: int | None, metrics_port: int | None, metrics_host: str, url: str,
            state: StateDir, as_json: bool) -> None:
    """Extract logs incrementally into DIR, each exactly once: one NDJSON file per batch,
    or with --format parquet a day-partitioned Parquet dataset (docs/formats.md)."""
    from prometheus_client import start_http_server

    from watchlog.clients.extractor import REGISTRY, Extractor
    from watchlog.core.errors import ExtractError

    if compact and fmt != "parquet":
        raise click.UsageError("--compact needs --format parquet")
    kind: Any = Extractor
    options: dict[str, Any] = {}
    if fmt == "parquet":
        from watchlog.clients.dataset import DatasetExtractor

        kind, options = DatasetExtractor, {"compact": compact}

    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host, registry=REGISTRY)
    out_dir = out_dir or output_root(state) / "extracts" / name
    stop = threading.Event()
    # A stop signal also cuts short a wait between two retries: `docker stop` gets a clean
    # exit at once, not after the retry budget (up to 30 s).
    with (umask(UMASK), client(url, state, sleep=sleep_unless(stop)) as c,
          stop_on_signals(stop)):
        ex = kind(c, name, out_dir, max_items, visibility_timeout, drop_rate=drop_rate,
                  random_seed=random_seed, **options)
        try:
            stats = ex.run(follow, interval, stop)
        except ExtractError as e:
            raise click.ClickException(str(e)) from None
        finally:
            if as_json:
                emit(ex.stats.as_dict())
    if not as_json:
        click.echo(f"{stats.batches} batches, {stats.written} logs written to {out_dir}, "
                   f"{stats.skipped_duplicates} duplicates skipped", err=True)

