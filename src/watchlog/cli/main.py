"""The ``watchlog`` command: services, clients, the native launcher and chaos tools."""

from __future__ import annotations

import importlib

import click

from watchlog import __version__

# (module, command attribute): imported lazily so `watchlog --help` stays fast.
COMMANDS = {
    "serve": ("watchlog.cli.serve", "serve"),
    "healthcheck": ("watchlog.cli.health", "healthcheck"),
    "simulate": ("watchlog.cli.simulate", "simulate"),
    "report": ("watchlog.cli.consumer", "report"),
    "export": ("watchlog.cli.consumer", "export"),
    "extract": ("watchlog.cli.consumer", "extract"),
    "up": ("watchlog.cli.stack", "up"),
    "down": ("watchlog.cli.stack", "down"),
    "status": ("watchlog.cli.stack", "status"),
    "chaos": ("watchlog.cli.chaos", "chaos"),
    "cluster": ("watchlog.cli.cluster", "cluster"),
    "alerts": ("watchlog.cli.alerts", "alerts"),
    "alert-sink": ("watchlog.cli.alerts", "alert_sink"),
}


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        """Run the command under the CLI's one error handler (``failures_as_click``)."""
        from watchlog.cli.options import failures_as_click

        with failures_as_click():
            return super().invoke(ctx)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        # Every command ships in every install: a module that fails to import is a bug, and
        # it fails loudly (its traceback), never as "No such command".
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="watchlog")
def cli() -> None:
    """watchlog: smart-watch activity logs on Redis Cluster."""


def main() -> None:
    cli(prog_name="watchlog")


if __name__ == "__main__":
    main()
