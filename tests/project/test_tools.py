"""A missing test tool fails the run, naming its package; skipping needs an explicit flag."""

from __future__ import annotations

import pytest

from helpers import ALLOW_MISSING, INSTALL, ROOT, require_tool

ABSENT = "watchlog-no-such-tool"


def test_a_present_tool_is_found() -> None:
    assert require_tool("redis-server").endswith("redis-server")


@pytest.mark.parametrize("env", [{}, {ALLOW_MISSING: "1", "CI": "true"},
                                 {ALLOW_MISSING: "0"}])
def test_a_missing_tool_fails_the_run(monkeypatch: pytest.MonkeyPatch,
                                      env: dict[str, str]) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(ALLOW_MISSING, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setitem(INSTALL, ABSENT, "apt-get install watchlog-test-package")
    with pytest.raises(pytest.fail.Exception, match="apt-get install watchlog-test-package"):
        require_tool(ABSENT)


def test_only_the_explicit_local_flag_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: the skip path exists, and says the proof did not run."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv(ALLOW_MISSING, "1")
    with pytest.raises(pytest.skip.Exception, match="NOT PROVEN"):
        require_tool(ABSENT)


def test_make_test_clears_the_flag() -> None:
    recipe = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert f"{ALLOW_MISSING}= $(BIN)/python -m pytest" in recipe


def test_every_debian_test_package_has_its_tools_listed() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for how in INSTALL.values():
        if how.startswith("apt-get install "):
            assert how.removeprefix("apt-get install ") in makefile, how
