"""The ``watchlog`` command: services, clients, the native launcher and chaos tools."""

from __future__ import annotations

import importlib

import click

from watchlog import __version__

# (module, command attribute): imported lazily so `watchlog --help` stays fast.
COMMANDS = {
    "serve": ("watchlog.cli.serve", "serve"),
    "healthcheck": ("watchlog.cli.health", "healthcheck"),
    "simulate": ("watchlog.producer.simulator", "simulate"),
    "report": ("watchlog.consumer.client", "report"),
    "export": ("watchlog.consumer.client", "export"),
    "extract": ("watchlog.consumer.client", "extract"),
    "up": ("watchlog.launcher.cli", "up"),
    "down": ("watchlog.launcher.cli", "down"),
    "status": ("watchlog.launcher.cli", "status"),
    "chaos": ("watchlog.launcher.chaos", "chaos"),
    "cluster": ("watchlog.launcher.cluster_cli", "cluster"),
    "alerts": ("watchlog.alerts", "alerts"),
    "alert-sink": ("watchlog.alerts", "alert_sink"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            return None  # a part not installed here (e.g. the launcher in a slim image)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="watchlog")
def cli() -> None:
    """watchlog: smart-watch activity logs on Redis Cluster."""


def main() -> None:
    cli(prog_name="watchlog")


if __name__ == "__main__":
    main()
