"""``watchlog cluster``: grow, shrink and rebalance the running Redis Cluster by partitions.

``add`` and ``remove`` act on the native cluster that ``watchlog up`` recorded in the state
directory; ``rebalance`` also takes ``--node host:port`` (any reachable cluster, compose's
included) with the admin password in ``WATCHLOG_REDIS_ADMIN_PASSWORD`` or ``REDISCLI_AUTH``.
Each prints its plan first; ``--dry-run`` stops there. Ctrl-C (SIGINT) or SIGTERM stops a
run once the partition being moved is done (exit 130); ``rebalance`` then finishes the job
from what the nodes say (slots owned, slots MIGRATING/IMPORTING), never from a file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from watchlog.cli.options import state_dir_option
from watchlog.launcher.redis.cluster import LocalCluster


def _say(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


@contextmanager
def _failures(finish: str) -> Iterator[None]:
    """Refusals say why; a failed or interrupted run names the command that finishes it."""
    import redis

    from watchlog.core.errors import LauncherError, ScaleError
    from watchlog.launcher.redis.scale import Interrupted, Refused, deferred_signals

    try:
        with deferred_signals():
            yield
    except Refused as e:
        raise click.ClickException(str(e)) from e
    except (ScaleError, LauncherError, redis.RedisError) as e:
        raise click.ClickException(f"{e} (run `{finish}` to finish)") from e
    except Interrupted as e:
        _say(f"interrupted ({e}) between partitions, none left half-moved: run `{finish}` "
             "to finish")
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        _say(f"interrupted: run `{finish}` to finish (it resumes from the cluster's own state)")
        raise SystemExit(130) from None


@click.group()
def cluster() -> None:
    """Grow, shrink and rebalance the Redis Cluster, live, by whole partitions."""


@cluster.command()
@state_dir_option
@click.option("--masters", type=click.IntRange(1, 16), required=True,
              help="How many masters to add.")
@click.option("--replicas", type=click.IntRange(0, 4), default=None,
              help="Replicas of each new master (default: as the cluster's masters have).")
@click.option("--dry-run", is_flag=True, help="Print what would start and move; do nothing.")
def add(state_dir: Path, masters: int, replicas: int | None, dry_run: bool) -> None:
    """Start masters (and their replicas), join them, move partitions to them."""
    from watchlog.launcher.redis.scale import add_masters

    with _failures("watchlog cluster rebalance"):
        add_masters(LocalCluster.recorded(state_dir), state_dir, masters, replicas, dry_run=dry_run,
                    progress=_say)


@cluster.command()
@state_dir_option
@click.argument("port", type=int)
@click.option("--dry-run", is_flag=True, help="Print what would move; do nothing.")
@click.option("--force", is_flag=True,
              help="Remove a master's only replica even though its writes wait for one.")
def remove(state_dir: Path, port: int, dry_run: bool, force: bool) -> None:
    """Move a master's partitions to the others, then retire it and its replicas."""
    from watchlog.launcher.redis.scale import remove_master

    with _failures(f"watchlog cluster remove {port}"):
        remove_master(LocalCluster.recorded(state_dir), state_dir, port, dry_run=dry_run,
                      progress=_say, force=force)


@cluster.command()
@state_dir_option
@click.option("--node", "nodes", multiple=True, metavar="HOST:PORT",
              help="A node of the cluster to act on (repeatable); default: the native "
                   "cluster of the state directory.")
@click.option("--user", default="admin", show_default=True,
              help="Redis user for --node (needs CLUSTER and MIGRATE).")
@click.option("--dry-run", is_flag=True, help="Print what would move; do nothing.")
def rebalance(state_dir: Path, nodes: tuple[str, ...], user: str, dry_run: bool) -> None:
    """Give every master an equal share of the 64 partitions (±1)."""
    from watchlog.launcher.redis.scale import Admin, local_admin
    from watchlog.launcher.redis.scale import rebalance as run

    with _failures("watchlog cluster rebalance" + "".join(f" --node {n}" for n in nodes)):
        if nodes:
            password = os.environ.get("WATCHLOG_REDIS_ADMIN_PASSWORD") or os.environ.get(
                "REDISCLI_AUTH")
            if not password:
                raise click.ClickException("set WATCHLOG_REDIS_ADMIN_PASSWORD (or "
                                           "REDISCLI_AUTH) to the admin password")
            admin = Admin(list(nodes), user, password)
        else:
            admin = local_admin(LocalCluster.recorded(state_dir))
        run(admin, dry_run=dry_run, progress=_say)
