"""``watchlog up | down | status``: the native launcher's commands."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from watchlog.cli.options import failures_as_click, state_dir_option
from watchlog.core.settings import Settings
from watchlog.launcher.services import Ports
from watchlog.launcher.stack import Stack, status_table

log = logging.getLogger(__name__)


@click.command()
@click.option("--nodes", "masters", type=click.IntRange(1, 64), default=3, show_default=True,
              help="Redis Cluster masters.")
@click.option("--replicas", type=click.IntRange(0, 4), default=0, show_default=True,
              help="Replicas per master.")
@state_dir_option
@click.option("--detach", is_flag=True, help="Return once everything is ready; stop with down.")
@click.option("--no-simulate", is_flag=True, help="Do not run the simulator and the extractor.")
@click.option("--no-monitoring", is_flag=True, help="No redis_exporter, Prometheus, Grafana.")
@click.option("--redis-port", type=int, default=7000, show_default=True,
              help="Port of the first Redis node; the others follow (+1 each).")
@click.option("--producer-port", type=int, default=None, help="Default: WATCHLOG_PRODUCER_PORT.")
@click.option("--consumer-port", type=int, default=None, help="Default: WATCHLOG_CONSUMER_PORT.")
@click.option("--prometheus-port", type=int, default=9090, show_default=True)
@click.option("--exporter-port", type=int, default=9121, show_default=True)
@click.option("--simulator-port", type=int, default=9101, show_default=True,
              help="The simulator's /metrics.")
@click.option("--extractor-port", type=int, default=9102, show_default=True,
              help="The extractor's /metrics.")
@click.option("--grafana-port", type=int, default=3000, show_default=True)
@click.option("--alertmanager-port", type=int, default=9093, show_default=True)
@click.option("--alert-sink-port", type=int, default=9095, show_default=True,
              help="Where Alertmanager's default receiver listens (`watchlog alerts` reads it).")
def up(masters: int, replicas: int, state_dir: Path, detach: bool, no_simulate: bool,
       no_monitoring: bool, redis_port: int, producer_port: int | None,
       consumer_port: int | None, **monitoring_ports: int) -> None:
    """Run the whole system on this machine, without Docker."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    ports = Ports(producer=producer_port or settings.producer_port,
                  consumer=consumer_port or settings.consumer_port,
                  **{k.removesuffix("_port"): v for k, v in monitoring_ports.items()})
    stack = Stack(settings, state_dir, masters=masters, replicas=replicas,
                  simulate=not no_simulate, monitoring=not no_monitoring,
                  redis_port=redis_port, ports=ports)
    with failures_as_click():
        stack.up(detach=detach)
    if detach:
        click.echo(f"running in the background; stop with: watchlog down --state-dir {state_dir}")


@click.command()
@state_dir_option
def down(state_dir: Path) -> None:
    """Stop what `watchlog up --detach` started."""
    with failures_as_click():
        stopped = Stack(Settings.from_env(), state_dir).down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@click.command()
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print every component as JSON.")
def status(state_dir: Path, as_json: bool) -> None:
    """Show each component's address, pid and state."""
    with failures_as_click():
        stack = Stack(Settings.from_env(), state_dir)
        rows = stack.status()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo(f"nothing recorded in {state_dir}")
    else:
        stack.console.print(status_table(rows))
