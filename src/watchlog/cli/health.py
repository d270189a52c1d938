"""``watchlog healthcheck URL``: a container healthcheck that needs no curl."""

from __future__ import annotations

import sys
import urllib.request

import click


@click.command()
@click.argument("url")
@click.option("--timeout", default=3.0, show_default=True, help="Seconds.")
def healthcheck(url: str, timeout: float) -> None:
    """Exit 0 when GET URL answers 2xx, else 1."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - our own URL
            ok = 200 <= r.status < 300
    except OSError:
        ok = False
    sys.exit(0 if ok else 1)
