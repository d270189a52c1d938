"""The CLI finds its credentials from any folder, and says where it looked when it cannot.

Order: ``--state-dir``, ``WATCHLOG_STATE_DIR``, ``.watchlog/`` in the current folder or a
parent, the user's state folder (platformdirs: ``$XDG_STATE_HOME/watchlog`` on Linux).
Every command runs as a user runs it: a ``watchlog`` process in some folder, against live
servers, with no token in its environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from watchlog.clients.http import find_state_dir


def watchlog(cwd: Path, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WATCHLOG_")}
    base.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"), **env)
    return subprocess.run([sys.executable, "-m", "watchlog", *args], cwd=cwd, env=base,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def tree(tmp_path: Path, cluster_settings) -> dict[str, Path]:  # noqa: ANN001
    """A project holding `.watchlog/credentials.env`, a deep folder in it, and a stranger."""
    creds = Path(cluster_settings.state_dir) / "credentials.env"
    project, home = tmp_path / "project", tmp_path / "home"
    (project / ".watchlog").mkdir(parents=True)
    shutil.copy(creds, project / ".watchlog" / "credentials.env")
    deep = project / "reports" / "2026"
    deep.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home.mkdir()
    return {"project": project, "deep": deep, "elsewhere": elsewhere, "home": home,
            "creds": creds}


@pytest.mark.parametrize("where", ["project", "deep"])
def test_cli_report_finds_credentials_in_this_folder_or_a_parent(
        tree: dict[str, Path], consumer_url: str, where: str) -> None:
    r = watchlog(tree[where], tree["home"], "report", "daily", "--json",
                 WATCHLOG_CONSUMER_URL=consumer_url)
    assert r.returncode == 0, r.stderr
    assert '"count":0' in r.stdout


def test_cli_without_credentials_says_where_it_looked_before_calling(
        tree: dict[str, Path], consumer_url: str) -> None:
    """Negative control of the lookup: from a folder outside the project nothing is found,
    and the command stops before any request (its URL answers nothing: a call would end in
    a connection error, not this message)."""
    r = watchlog(tree["elsewhere"], tree["home"], "report", "daily",
                 WATCHLOG_CONSUMER_URL="http://127.0.0.1:9")
    assert r.returncode == 1
    assert "no reader key found" in r.stderr
    assert str(tree["elsewhere"] / ".watchlog") in r.stderr
    assert str(tree["home"] / "state" / "watchlog") in r.stderr
    assert "ConnectError" not in r.stderr and "gave up" not in r.stderr


def test_cli_state_dir_option_env_and_user_folder(tree: dict[str, Path],
                                                  consumer_url: str) -> None:
    state = tree["project"] / ".watchlog"
    for args, env in ((["--state-dir", str(state)], {}),
                      ([], {"WATCHLOG_STATE_DIR": str(state)})):
        r = watchlog(tree["elsewhere"], tree["home"], "report", "daily", "--json", *args,
                     WATCHLOG_CONSUMER_URL=consumer_url, **env)
        assert r.returncode == 0, r.stderr
    user = tree["home"] / "state" / "watchlog"
    user.mkdir(parents=True)
    shutil.copy(tree["creds"], user / "credentials.env")
    r = watchlog(tree["elsewhere"], tree["home"], "export", "--json",
                 WATCHLOG_CONSUMER_URL=consumer_url)
    assert r.returncode == 0, r.stderr
    assert '"file":"' + str(user / "exports") in r.stdout  # output under the state folder


def test_find_state_dir_order(tmp_path: Path) -> None:
    (tmp_path / "a" / ".watchlog").mkdir(parents=True)
    (tmp_path / "a" / ".watchlog" / "credentials.env").write_text("WATCHLOG_READER_KEY=k\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir()
    assert find_state_dir("/x", {"WATCHLOG_STATE_DIR": "/y"}, deep).path == Path("/x")
    assert find_state_dir(None, {"WATCHLOG_STATE_DIR": "/y"}, deep).path == Path("/y")
    assert find_state_dir(None, {}, deep).path == tmp_path / "a" / ".watchlog"
