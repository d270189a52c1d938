"""The code passes its own linters: ruff (style, complexity), mypy (types) and the layers.

mypy reads its files and flags from pyproject.toml: src/watchlog with the flags of
``mypy --strict``, tests and bench with check_untyped_defs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

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


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the tree at ``root`` (its src/ first on the path, no cache)."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(BIN / "lint-imports"), "--config", str(root / "pyproject.toml"),
                           "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("upward_import", [False, True], ids=["tree", "core-imports-cli"])
def test_lint_imports_layers_hold(upward_import: bool, tmp_path: Path) -> None:
    """The layers contract (pyproject.toml) is kept; a lower layer importing an upper one
    breaks it (the negative control: a copy of the tree where core imports the CLI)."""
    root = ROOT
    if upward_import:
        root = tmp_path
        shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
        shutil.copytree(ROOT / "src" / "watchlog", root / "src" / "watchlog",
                        ignore=shutil.ignore_patterns("__pycache__"))
        keys = root / "src" / "watchlog" / "core" / "keys.py"
        keys.write_text(keys.read_text() + "\nfrom watchlog.cli import options  # noqa\n")
    r = lint_imports(root)
    out = r.stdout + r.stderr
    if upward_import:
        assert r.returncode != 0, out
        assert "BROKEN" in out and "watchlog.core.keys -> watchlog.cli.options" in out, out
    else:
        assert r.returncode == 0, out
        assert "KEPT" in out, out
