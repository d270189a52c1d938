"""``watchlog chaos``: break a running system on purpose and watch the dashboards react.

Two kinds of harm. **Faults** (delays and error responses) are set on the running APIs
through ``/admin/faults`` with the admin key, so they reach every worker within a second
and need no restart. **Node failures** (kill -9, restart, pause, reshard) act on the local
Redis Cluster that ``watchlog up`` recorded in the state directory. A node is named by its
port, as ``watchlog chaos nodes`` lists them.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from watchlog.api.faults import PRESETS, FaultSpec
from watchlog.cli.options import (
    F,
    consumer_url_option,
    failures_as_click,
    producer_url_option,
    random_seed_option,
    state_dir_option,
)
from watchlog.clients.faults import call
from watchlog.core import keys
from watchlog.launcher.redis.cluster import LocalCluster
from watchlog.launcher.verify import NEMESES

SERVICES = ("producer", "consumer")
STATUSES = ("500", "502", "503", "504")


@click.group()
def chaos() -> None:
    """Inject faults into the APIs, or kill, pause and reshard Redis nodes."""


# -- faults: through the admin endpoint of each API ------------------------------------


def service_options(f: F) -> F:
    """Add ``--service`` and the two API URLs (env ``WATCHLOG_*_URL``)."""
    f = consumer_url_option()(f)
    f = producer_url_option()(f)
    return click.option("--service", type=click.Choice([*SERVICES, "both"]), default="both",
                        show_default=True, help="Which API to act on.")(f)


def _targets(service: str, producer_url: str, consumer_url: str) -> list[tuple[str, str]]:
    urls = {"producer": producer_url, "consumer": consumer_url}
    names = SERVICES if service == "both" else (service,)
    return [(name, urls[name]) for name in names]


def _echo_specs(specs: dict[str, dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(specs, indent=2))
        return
    for name, spec in specs.items():
        click.echo(f"{name}: {describe(spec)}")


def describe(spec: dict[str, Any]) -> str:
    """Return a spec as one line a person reads at a glance."""
    parts = []
    if spec.get("delay_p"):
        parts.append(f"delay {spec['delay_p']:.0%} of calls by {spec['delay']}")
    if spec.get("abort_p"):
        ra = f", Retry-After {spec['retry_after']} s" if spec.get("retry_after") is not None else ""
        parts.append(f"fail {spec['abort_p']:.0%} with {spec['abort_status']} "
                     f"({spec['abort_phase']}{ra})")
    if not parts:
        return "no faults"
    where = f" on {', '.join(spec['routes'])}" if spec.get("routes") else ""
    return "; ".join(parts) + where


@chaos.group()
def faults() -> None:
    """Show, set or reset the injected delay and failure of the APIs."""


@faults.command("show")
@service_options
@click.option("--json", "as_json", is_flag=True)
def faults_show(service: str, producer_url: str, consumer_url: str, as_json: bool) -> None:
    """Show the fault spec in force on each API."""
    with failures_as_click():
        specs = {n: call(u, "GET") for n, u in _targets(service, producer_url, consumer_url)}
    _echo_specs(specs, as_json)


@faults.command("set")
@service_options
@click.option("--preset", type=click.Choice(sorted(PRESETS)),
              help="Start from a preset (seed: the seed's 0.5-2 s delay and 20% 500s).")
@click.option("--delay-p", type=click.FloatRange(0, 1), help="Probability of a delay.")
@click.option("--delay", help="fixed:S | uniform:A:B | lognormal:MEDIAN:SIGMA (seconds).")
@click.option("--abort-p", type=click.FloatRange(0, 1), help="Probability of an error.")
@click.option("--abort-status", type=click.Choice(STATUSES), help="Status of injected errors.")
@click.option("--abort-phase", type=click.Choice(["before", "after", "both"]),
              help="Fail before the work, after it (a write committed), or either.")
@click.option("--retry-after", type=click.IntRange(0, 3600), help="Send Retry-After: S.")
@click.option("--routes", help="Comma-separated URL rules (default: every business route).")
@click.option("--json", "as_json", is_flag=True)
def faults_set(service: str, producer_url: str, consumer_url: str, preset: str | None,
               as_json: bool, **changes: object) -> None:
    """Change the faults: the options given replace those of the current spec (or preset)."""
    with failures_as_click():
        specs = {}
        for name, url in _targets(service, producer_url, consumer_url):
            # Start from what is in force, so `--abort-p 0.5` turns one knob, not all.
            base = _preset_dict(preset) if preset else call(url, "GET")
            specs[name] = call(url, "PUT", merge(base, changes))
    _echo_specs(specs, as_json)


def _preset_dict(name: str) -> dict[str, Any]:
    import msgspec

    preset: dict[str, Any] = msgspec.to_builtins(PRESETS[name])
    return preset


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with the options that were given; validate locally first."""
    import msgspec

    spec = dict(base)
    for key, value in changes.items():
        if value is None:
            continue
        if key == "abort_status":
            value = int(value)
        elif key == "routes":
            value = [r.strip() for r in value.split(",") if r.strip()]
        spec[key] = value
    try:
        msgspec.convert(spec, FaultSpec)  # a clear message here, not a 422 later
    except msgspec.ValidationError as e:
        raise click.BadParameter(str(e)) from None
    return spec


@faults.command("reset")
@service_options
def faults_reset(service: str, producer_url: str, consumer_url: str) -> None:
    """Go back to the WATCHLOG_FAULT_* settings each API started with."""
    with failures_as_click():
        specs = {n: call(u, "DELETE") for n, u in _targets(service, producer_url, consumer_url)}
    _echo_specs(specs, False)


# -- Redis nodes: through the local cluster recorded by `watchlog up` -------------------


def _node(cluster: LocalCluster, port: int) -> int:
    if port not in cluster.ports:
        ports = ", ".join(map(str, cluster.ports))
        raise click.ClickException(f"{port} is not a node of this cluster (nodes: {ports})")
    return port


@chaos.command()
@state_dir_option
@click.option("--json", "as_json", is_flag=True)
def nodes(state_dir: Path, as_json: bool) -> None:
    """List the Redis nodes: port, pid, role, slots and partitions."""
    with failures_as_click():
        rows = LocalCluster.recorded(state_dir).node_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("node", "pid", "role", "slots", "partitions", "replica of", title="redis")
    colour = {"master": "green", "replica": "cyan", "down": "red"}
    for r in rows:
        table.add_row(str(r["port"]), str(r["pid"] or "-"), f"[{colour[r['role']]}]"
                      f"{r['role']}[/]", str(r["slots"]), str(r["partitions"]),
                      str(r["replica_of"] or ""))
    Console().print(table)


@chaos.command()
@state_dir_option
@click.argument("node", type=int)
def kill(state_dir: Path, node: int) -> None:
    """SIGKILL a Redis node: a crash, no AOF flush. Its replica takes over after the
    cluster node timeout."""
    with failures_as_click():
        cluster = LocalCluster.recorded(state_dir)
        if not cluster.pid(_node(cluster, node)):
            raise click.ClickException(f"redis node {node} is not running")
        cluster.kill(node)
    click.echo(f"killed redis node {node}; bring it back with: watchlog chaos restart {node}")


@chaos.command()
@state_dir_option
@click.argument("node", type=int)
def restart(state_dir: Path, node: int) -> None:
    """Start a killed Redis node again with its data (it rejoins, maybe as a replica)."""
    with failures_as_click():
        cluster = LocalCluster.recorded(state_dir)
        cluster.start_node(_node(cluster, node))
    click.echo(f"redis node {node} is running")


@chaos.command()
@state_dir_option
@click.argument("node", type=int)
@click.option("--seconds", type=click.FloatRange(0.1, 600), default=10, show_default=True)
@click.option("--how", type=click.Choice(["sigstop", "client-pause"]), default="sigstop",
              show_default=True,
              help="sigstop freezes the whole process (cluster bus too: a pause longer than "
                   "the node timeout is a failover); client-pause stops serving clients only.")
def pause(state_dir: Path, node: int, seconds: float, how: str) -> None:
    """Freeze a Redis node for a while, then let it go on."""
    with failures_as_click():
        cluster = LocalCluster.recorded(state_dir)
        _node(cluster, node)
        if how == "client-pause":
            # The server resumes by itself: nothing to wait for here.
            cluster.node_client(node).execute_command("CLIENT", "PAUSE", int(seconds * 1000))
            click.echo(f"redis node {node} pauses its clients for {seconds:g} s")
            return
        freeze(cluster, node, seconds)
    click.echo(f"redis node {node} continues")


def freeze(cluster: LocalCluster, node: int, seconds: float) -> None:
    """SIGSTOP a node, wait, SIGCONT it; continue it at once on Ctrl-C."""
    pid = cluster.pid(node)
    timer = cluster.pause(node, seconds)
    click.echo(f"redis node {node} (pid {pid}) stopped for {seconds:g} s (Ctrl-C continues it)")
    try:
        # The timer is a daemon thread: this process must outlive it, or the node stays frozen.
        timer.join()
    finally:
        timer.cancel()
        if pid:
            os.kill(pid, signal.SIGCONT)


@chaos.command()
@state_dir_option
@click.option("--from", "source", type=int, required=True, help="Master giving slots.")
@click.option("--to", "target", type=int, required=True, help="Master taking them.")
@click.option("--slots", type=click.IntRange(1, keys.SLOTS), default=None,
              help="Move the N lowest slots of the source.")
@click.option("--partitions", type=click.IntRange(1, keys.PARTITIONS), default=None,
              help="Move the slots of N partitions of the source (the ones that hold data).")
def reshard(state_dir: Path, source: int, target: int, slots: int | None,
            partitions: int | None) -> None:
    """Move slots from one master to another, live (clients follow ASK/MOVED)."""
    if (slots is None) == (partitions is None):
        raise click.UsageError("give one of --slots or --partitions")
    with failures_as_click():
        cluster = LocalCluster.recorded(state_dir)
        _node(cluster, source), _node(cluster, target)
        which: int | list[int] = slots if slots is not None else cluster.partition_slots(
            source, partitions or 0)
        started = time.monotonic()
        moved = cluster.reshard(source, target, which)
    click.echo(f"moved {moved} slots from {source} to {target} "
               f"in {time.monotonic() - started:.1f} s")


# -- the checker -------------------------------------------------------------------------


@chaos.command()
@state_dir_option
@producer_url_option()
@consumer_url_option()
@click.option("--nemesis", type=click.Choice(NEMESES),
              default="none", show_default=True, help="The harm done during the writes.")
@click.option("--count", type=click.IntRange(1, 1_000_000), default=3000, show_default=True,
              help="Logs to write.")
@click.option("--writers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Concurrent client threads.")
@click.option("--duration", type=click.FloatRange(0), default=None,
              help="Spread the writes over this many seconds (default: the nemesis's usual "
                   "length).")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="UTC day the logs are dated (default: two days ago).")
@random_seed_option("Random seed of the workload (replayable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(state_dir: Path, producer_url: str, consumer_url: str, nemesis: str, count: int,
           writers: int, duration: float | None, day: datetime | None,
           random_seed: int | None,
           as_json: bool) -> None:
    """Write logs with a ledger, harm the system, read back: lost, duplicated, phantom.

    Exits 1 when an acknowledged log is lost, a log is stored or extracted twice, a log
    appears that was never sent, a first send is answered `duplicate`, or an aggregate
    disagrees with the logs; 2 when the check itself could not run (docs/chaos.md).
    """
    from watchlog.launcher import verify as v

    opts = v.Options(producer_url.rstrip("/"), consumer_url.rstrip("/"), state_dir,
                     nemesis=nemesis, count=count, writers=writers, random_seed=random_seed,
                     day=day.date() if day else None, duration=duration)
    progress = (lambda _: None) if as_json else (lambda line: click.echo(line, err=True))
    try:
        with failures_as_click():
            try:
                tokens = checker_tokens(state_dir, admin=nemesis == "faults")
                result = v.run_checker(opts, tokens, progress=progress)
            except v.VerifyError as e:
                raise click.ClickException(str(e)) from e
    except click.ClickException as e:
        raise CouldNotCheck(e.message) from e
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for line in v.render(result):
            click.echo(line)
    if result["failed"]:
        raise SystemExit(1)


class CouldNotCheck(click.ClickException):
    """The checker could not run to the end: no verdict (exit 2, not 1)."""

    exit_code = 2


def checker_tokens(state_dir: Path, admin: bool) -> dict[str, str]:
    """The ingest, reader (and admin) tokens: the environment, then ``<state>/credentials``."""
    from watchlog.clients.http import find_state_dir, require_token
    from watchlog.core.errors import NoCredentials

    state = find_state_dir(state_dir)
    roles = ("ingest", "reader", "admin") if admin else ("ingest", "reader")
    try:
        return {role: require_token(role, state=state) or "" for role in roles}
    except NoCredentials as e:
        raise click.ClickException(str(e)) from None
