"""The ``watchlog`` group: every command resolves, and a broken import fails loudly."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from watchlog.cli import main


def test_every_command_imports() -> None:
    for name in main.COMMANDS:
        assert main.cli.get_command(click.Context(main.cli), name) is not None, name


@pytest.mark.parametrize("broken", [True, False])
def test_a_broken_import_is_not_no_such_command(broken: bool, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A command whose module cannot import shows the ImportError, not "No such command".

    Negative control (``broken=False``): a name that is not a command still answers
    "No such command", so the check tells the two apart.
    """
    (tmp_path / "watchlog_broken_cmd.py").write_text(
        "import watchlog_no_such_module  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(main.COMMANDS, "broken", ("watchlog_broken_cmd", "broken"))
    result = CliRunner().invoke(main.cli, ["broken" if broken else "no-such-command"])
    assert result.exit_code != 0
    if broken:
        assert isinstance(result.exception, ImportError), result.output
        assert "watchlog_no_such_module" in str(result.exception)
        assert "No such command" not in result.output
    else:
        assert "No such command" in result.output
    sys.modules.pop("watchlog_broken_cmd", None)


@pytest.mark.parametrize("raised", ["LauncherError", "KeyError"])
def test_one_handler_turns_the_family_into_a_red_line(raised: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Any ``WatchlogError`` a command raises ends in ``Error: <message>`` and exit 1, by the
    group's one handler. Negative control: an error outside the family (a bug) is not
    dressed up; its traceback stays (``result.exception``)."""
    (tmp_path / "watchlog_failing_cmd.py").write_text(
        "import click\n"
        "from watchlog.core.errors import LauncherError\n"
        "@click.command()\n"
        "def failing():\n"
        f"    raise {raised}('port 7000 is taken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(main.COMMANDS, "failing", ("watchlog_failing_cmd", "failing"))
    result = CliRunner().invoke(main.cli, ["failing"])
    sys.modules.pop("watchlog_failing_cmd", None)
    assert result.exit_code == 1
    if raised == "LauncherError":
        assert "Error: port 7000 is taken" in result.output
        assert isinstance(result.exception, SystemExit)
    else:
        assert isinstance(result.exception, KeyError)


@pytest.mark.parametrize("command", [["simulate"], ["extract", "--name", "x"],
                                     ["chaos", "verify"]])
@pytest.mark.parametrize("flag", ["--random-seed", "--seed", "--random-sed"])
def test_random_seed_keeps_seed_as_an_alias(command: list[str], flag: str) -> None:
    """``--random-seed`` is the name; ``--seed`` (the old one) sets the same value. The
    misspelled flag is refused: the check tells a parsed option from an ignored one."""
    group: click.Group = main.cli
    *path, last = command[:1] + ([command[1]] if command[0] == "chaos" else [])
    for name in path:
        sub = group.get_command(click.Context(group), name)
        assert isinstance(sub, click.Group)
        group = sub
    cmd = group.get_command(click.Context(group), last)
    assert cmd is not None
    args = [a for a in command if a not in (*path, last)] + [flag, "7"]
    if flag == "--random-sed":
        with pytest.raises(click.NoSuchOption):
            cmd.make_context(last, args)
    else:
        assert cmd.make_context(last, args).params["random_seed"] == 7
