"""Every ``type: ignore`` in the package names its error code and says why.

mypy itself refuses an ignore without a code (``ignore-without-code``, pyproject.toml) and one
that no longer silences anything (``warn_unused_ignores``); the reason is checked here: a
comment after the ignore on the same line, or a comment line just above it.
"""

from __future__ import annotations

import re

import pytest

from helpers import ROOT

SRC = ROOT / "src" / "watchlog"
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")


def unexplained(path: str, lines: list[str]) -> list[str]:
    """Return ``path:line`` of each ignore without an error code or without a reason."""
    found = []
    for n, line in enumerate(lines):
        m = IGNORE.search(line)
        if m is None:
            continue
        reason_after = m.group("rest").strip().startswith("#")
        reason_above = n > 0 and lines[n - 1].strip().startswith("#")
        if not m.group("codes") or not (reason_after or reason_above):
            found.append(f"{path}:{n + 1}: {line.strip()}")
    return found


def test_every_type_ignore_in_src_names_its_code_and_reason() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        bad += unexplained(str(path.relative_to(SRC)), path.read_text().splitlines())
    assert bad == []


@pytest.mark.parametrize(("lines", "caught"), [
    (["x = f()  # type: ignore"], True),
    (["x = f()  # type: ignore[arg-type]"], True),
    (["y = 1", "x = f()  # type: ignore[arg-type]"], True),
    (["x = f()  # type: ignore[arg-type]  # f is untyped upstream"], False),
    (["# f is untyped upstream", "x = f()  # type: ignore[arg-type]"], False),
], ids=["no-code", "no-reason", "no-reason-above", "reason-after", "reason-above"])
def test_the_check_catches_an_ignore_without_code_or_reason(lines: list[str],
                                                            caught: bool) -> None:
    """The negative control: the same check on lines written to fail it (and to pass)."""
    assert bool(unexplained("example.py", lines)) is caught
