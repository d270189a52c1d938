"""The code passes its own linters: ruff (style, complexity) and mypy (types).

mypy reads its files and flags from pyproject.toml: src/watchlog with the flags of
``mypy --strict``, tests and bench with check_untyped_defs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_lint_ruff_is_clean() -> None:
    r = subprocess.run([str(BIN / "ruff"), "check", "src", "tests", "bench"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_lint_mypy_is_clean() -> None:
    r = subprocess.run([str(BIN / "mypy")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    # the run covers the tests and the benchmark harness, not only the package
    checked = int(r.stdout.rsplit(" source files", 1)[0].rsplit(" ", 1)[1])
    assert checked > len(list((ROOT / "src").rglob("*.py"))), r.stdout
