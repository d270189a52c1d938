"""``watchlog simulate``: a fleet of watches sending activity logs to the producer.

The engine (the fleet, the paced dispatcher, the senders) is ``watchlog.clients.simulator``.
"""

from __future__ import annotations

import click
import msgspec
from prometheus_client import start_http_server

from watchlog.cli.options import credentials_option, producer_url_option, random_seed_option
from watchlog.clients.dispatch import Plan
from watchlog.clients.http import StateDir, require_token
from watchlog.clients.simulator import REGISTRY, run
from watchlog.core.errors import NoCredentials

SEED_RATE = 0.1  # logs/s: the seed's client sent one log every 10 s


def default_rate(rate: float | None, count: int | None, duration: float | None) -> float:
    """Return the pace: as given; else as fast as possible when the run has an end
    (``--count``/``--duration``), else the seed's pace."""
    if rate is not None:
        return rate
    return 0.0 if count is not None or duration is not None else SEED_RATE


@click.command()
@producer_url_option("--url")
@click.option("--users", type=click.IntRange(1), default=100, show_default=True)
@click.option("--rate", type=click.FloatRange(0), default=None,
              help="Logs per second (0: as fast as the producer takes them). Default: as fast "
              f"as possible with --count or --duration, else {SEED_RATE} (the seed's pace).")
@click.option("--batch", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Logs per request (1: single JSON objects).")
@click.option("--gzip/--no-gzip", "gzip_batches", default=True, show_default=True,
              help="Compress batch bodies (Content-Encoding: gzip).")
@click.option("--count", type=click.IntRange(0), default=None, help="Stop after N logs.")
@click.option("--duration", type=click.FloatRange(0), default=None, help="Stop after S s.")
@random_seed_option("Replay the same logs and event ids.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of calls a watch drops once and makes again later.")
@click.option("--offline-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Chance per log that its watch goes offline, then sends late in a burst.")
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address /metrics listens on (0.0.0.0 to let another host scrape it).")
@click.option("--ack-log", type=click.Path(dir_okay=False), default=None,
              help="Append every acknowledged event_id to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--progress-every", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds between progress lines when stderr is not a terminal.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@credentials_option
def simulate(url: str, users: int, rate: float | None, batch: int, gzip_batches: bool,
             count: int | None, duration: float | None, random_seed: int | None, concurrency: int,
             drop_rate: float, offline_rate: float, metrics_port: int | None,
             metrics_host: str, ack_log: str | None, as_json: bool, progress_every: float,
             quiet: bool, state: StateDir) -> None:
    """Simulate a fleet of watches sending activity logs to the producer."""
    rate = default_rate(rate, count, duration)
    try:
        token = require_token("ingest", state=state)
    except NoCredentials as e:
        raise click.ClickException(str(e)) from None
    plan = Plan(url, users, rate, batch, gzip_batches, count, duration, random_seed, concurrency,
                drop_rate, offline_rate, ack_log)
    if not quiet:
        pace = f"{rate:g} logs/s" if rate else "as fast as the producer takes them"
        goal = f"{count} logs" if count is not None else (
            f"{duration:g} s" if duration is not None else "until Ctrl-C")
        click.echo(f"simulate: {goal} to {url}, {pace}", err=True)
    server = (start_http_server(metrics_port, addr=metrics_host, registry=REGISTRY)
              if metrics_port else None)
    try:
        tally = run(plan, token, quiet, progress_every)
    finally:
        if isinstance(server, tuple):
            server[0].shutdown()
    if as_json:
        click.echo(msgspec.json.encode(tally.summary(ack_log)).decode())
    if tally.fatal:
        raise click.ClickException(tally.fatal)
    if tally.sent and not tally.acknowledged:
        raise click.ClickException("nothing could be delivered to the producer")
