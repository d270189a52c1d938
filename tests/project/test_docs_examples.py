"""Every shell block of README.md and docs/*.md runs as written against a live stack.

The stack is the one ``watchlog up --detach`` starts (``live_stack`` in conftest.py). Each
page runs in a fresh folder laid out like the repository's root after ``make run``:
``.watchlog/`` (the stack's state: credentials, pids), ``examples/`` and ``.venv/``. Only
the URLs are passed, as ``WATCHLOG_PRODUCER_URL``/``WATCHLOG_CONSUMER_URL`` (the stack runs
on free ports); no token is in the environment. How blocks run and what is checked:
``codeblocks.py``.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import httpx
import pytest
from codeblocks import Block, run_blocks, shell_blocks
from codeblocks import report as describe

from helpers import ROOT
from watchlog.api.faults import REFRESH_S
from watchlog.core.credentials import read_env_file
from watchlog.launcher.services import BUILTIN_EXTRACTOR

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGES_WITH_SHELL = [p for p in PAGES if shell_blocks(p)]


def workdir(tmp: Path, stack: dict[str, str], examples: bool = True) -> Path:
    """A folder like the repository's root after `make run`, for the stack under test."""
    (tmp / ".watchlog").symlink_to(stack["state_dir"], target_is_directory=True)
    (tmp / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    if examples:
        (tmp / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    return tmp


def faults_off(stack: dict[str, str]) -> None:
    """Wait until no fault spec is set and every worker has re-read it (the fixture's load
    turned faults on and off; a worker re-reads the spec once a second)."""
    creds = read_env_file(Path(stack["state_dir"]) / "credentials.env")
    headers = {"Authorization": f"Bearer {creds['WATCHLOG_ADMIN_KEY']}"}
    for service in ("producer", "consumer"):
        spec = httpx.get(stack[service] + "/admin/faults", headers=headers).json()
        assert spec["abort_p"] == 0 and spec["delay_p"] == 0, spec
    time.sleep(REFRESH_S + 0.25)


def reader_env(stack: dict[str, str], home: Path) -> dict[str, str]:
    """A reader's environment: no WATCHLOG_* but where the APIs listen."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHLOG_")}
    env.update(WATCHLOG_PRODUCER_URL=stack["producer"], WATCHLOG_CONSUMER_URL=stack["consumer"],
               HOME=str(home))
    return env


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_SHELL, ids=lambda p: p.name)
def test_docs_shell_blocks_run_and_print_what_they_say(page: Path, live_stack: dict[str, str],
                                                        tmp_path: Path) -> None:
    blocks = shell_blocks(page)
    faults_off(live_stack)
    outcomes = run_blocks(blocks, workdir(tmp_path, live_stack),
                          reader_env(live_stack, tmp_path))
    assert outcomes or all(b.skip for b in blocks)
    failed = [o for o in outcomes if o.problems]
    assert not failed, describe(outcomes)


def test_readme_runs_its_examples_and_skips_only_with_a_reason() -> None:
    blocks = shell_blocks(ROOT / "README.md")
    run = [b for b in blocks if b.skip is None]
    assert len(run) >= 7 and sum(len(b.expected) for b in run) >= 20
    assert {b.skip for b in blocks if b.skip} and all(b.skip for b in blocks if b.skip)
    assert any("make run" in b.code for b in blocks if b.skip)
    assert any("docker compose" in b.code for b in blocks if b.skip)
    for name in ("seed.json", "batch.json", "logs.ndjson"):  # posted through `ex <name>`
        assert any(f"ex {name}" in b.code for b in run) and (ROOT / "examples" / name).is_file()
    # Every file a block posts (`-d @FILE`, `--data-binary @FILE`) is in the repository: a
    # reader has nothing else (`@-`, stdin, is the only exception).
    posted = {m for b in run for m in re.findall(r"(?:-d|--data(?:-binary)?) @(\S+)", b.code)}
    assert posted <= {"-"} | {p for p in posted if (ROOT / p).is_file()}, posted


EXTRACTOR = re.compile(r"/v1/extractors/([A-Za-z0-9._-]+)|--name ([A-Za-z0-9._-]+)")


def extractor_names(blocks: list[Block]) -> set[str]:
    return {a or b for blk in blocks for a, b in EXTRACTOR.findall(blk.code)}


@pytest.mark.parametrize("blocks", ["docs", "control"])
def test_docs_examples_never_use_the_builtin_extractor(blocks: str) -> None:
    """The examples' extractors are not the one `watchlog up` runs. Negative control: the
    README's former example (PUT .../reports, when reports was the built-in name) is caught
    by the same check."""
    if blocks == "docs":
        used = extractor_names([b for p in PAGES for b in shell_blocks(p)])
        assert "my-report" in used and BUILTIN_EXTRACTOR not in used
    else:
        old = Block("old", 1, f"curl -s -X PUT -H \"$H\" $C/v1/extractors/{BUILTIN_EXTRACTOR}")
        assert BUILTIN_EXTRACTOR in extractor_names([old])


@pytest.mark.slow
def test_docs_examples_check_catches_missing_example_files(live_stack: dict[str, str],
                                                           tmp_path: Path) -> None:
    """Negative control: the same run without examples/ fails each block that posts one."""
    def posts(code: str) -> bool:  # through `ex FILE`, the README's date-moving `sed`
        return "ex seed.json" in code or "ex batch.json" in code

    blocks = [b for b in shell_blocks(ROOT / "README.md") if b.skip is None
              and ("credentials.env" in b.code or posts(b.code))]
    outcomes = run_blocks(blocks, workdir(tmp_path, live_stack, examples=False),
                          reader_env(live_stack, tmp_path))
    posting = [o for o in outcomes if posts(o.block.code)]
    assert posting and all(o.problems for o in posting), describe(outcomes)


def page(tmp: Path, text: str) -> list[Block]:
    path = tmp / "page.md"
    path.write_text(text)
    return shell_blocks(path)


@pytest.mark.parametrize(("code", "problem"), [
    ('echo \'{"status": "created"}\'\n# => {"status": "duplicate"}', "documented output"),
    ("echo '{\"error\": \"malformed\", \"message\": \"truncated\"}'", "does not document"),
    ("false", "command failed"),
    ("cat no-such-file.json", "command failed"),
])
def test_codeblocks_catch_a_block_that_does_not_do_what_it_says(tmp_path: Path, code: str,
                                                                problem: str) -> None:
    blocks = page(tmp_path, f"# t\n\n```bash\n{code}\n```\n")
    (outcome,) = run_blocks(blocks, tmp_path, dict(os.environ))
    assert any(problem in p for p in outcome.problems), outcome


def test_codeblocks_pass_documented_output_and_share_variables(tmp_path: Path) -> None:
    text = ("```bash\nX=1; echo '{\"a\": 1, \"b\": [1, 2]}{\"c\": \"d\"}'   # => {\"b\": [1]}\n"
            "# => {\"c\": \"d\"}\n```\n\n```sh\necho \"x=$X\"  # => x=1\n```\n\n"
            "```bash\n# not run by the suite: an example\nexit 1\n```\n")
    blocks = page(tmp_path, text)
    assert [b.skip for b in blocks] == [None, None, "an example"]
    outcomes = run_blocks(blocks, tmp_path, dict(os.environ))
    assert [o.problems for o in outcomes] == [[], []]


def test_codeblocks_refuse_a_skip_without_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a reason"):
        page(tmp_path, "```bash\n# not run by the suite:\nmake run\n```\n")
