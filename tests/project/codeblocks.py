"""Run a Markdown page's shell blocks as a reader would, and check the output it documents.

A fenced block tagged ``bash``, ``sh``, ``shell`` or ``console`` is a shell block. The
blocks of one page run in order in one bash process (variables set in one block are seen
by the next, as in the reader's terminal), each ``source``d from its own file.

- A block whose first line is ``# not run by the suite: <reason>`` is skipped; the reason
  is required and shows in the rendered page.
- ``# => <expected>`` (on its own line or after a command) documents output: a JSON
  value is matched as a subset of the next JSON document the block printed (objects: the
  keys shown, with their values; arrays: the items shown, in order), anything else as a
  substring of the next line printed. Expectations are met in order.
- A block fails when a command in it fails (bash's ``ERR`` trap), when an expectation is
  not met, or when it prints a JSON object with an ``error`` key that no expectation names.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHELLS = frozenset({"bash", "sh", "shell", "console"})
SKIP = "# not run by the suite:"
EXPECT = re.compile(r"(?:^|\s)# => (.+)$")
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARK = "@@codeblock"


@dataclass
class Block:
    """One shell block of a page."""

    page: str
    line: int
    code: str
    skip: str | None = None  # the reason it is not run
    expected: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def shell_blocks(path: Path) -> list[Block]:
    """Return every shell block of a Markdown file, with its skip reason and expectations."""
    text = path.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        if m.group(1) not in SHELLS:
            continue
        code = m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        first = code.lstrip().splitlines()[0] if code.strip() else ""
        skip = None
        if first.startswith(SKIP):
            skip = first[len(SKIP):].strip()
            if not skip:
                raise ValueError(f"{path.name}:{line}: '{SKIP}' needs a reason")
        expected = [e.group(1).strip() for ln in code.splitlines() if (e := EXPECT.search(ln))]
        blocks.append(Block(path.name, line, code, skip, expected))
    return blocks


@dataclass
class Outcome:
    block: Block
    stdout: str
    stderr: str
    problems: list[str]


def run_blocks(blocks: list[Block], cwd: Path, env: dict[str, str],
               timeout: float = 300) -> list[Outcome]:
    """Run the blocks (those not skipped) in one bash process; check each one's output."""
    todo = [b for b in blocks if b.skip is None]
    script: list[str] = []
    for i, b in enumerate(todo):
        path = cwd / f".codeblock-{i}.sh"
        path.write_text(b.code)
        # a newline first: the previous block's last output may not end with one (curl -s)
        script += [f"printf '\\n{MARK} {i}\\n'; printf '\\n{MARK} {i}\\n' >&2",
                   f"trap 'printf \"\\n{MARK} failed: %s\\n\" \"$BASH_COMMAND\" >&2' ERR",
                   f"source {path.name}", "trap - ERR"]
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    outs, errs = _split(proc.stdout, len(todo)), _split(proc.stderr, len(todo))
    return [Outcome(b, o, e, check(b, o, e)) for b, o, e in zip(todo, outs, errs, strict=True)]


def _split(text: str, n: int) -> list[str]:
    parts = re.split(rf"^{MARK} (\d+)\n", text, flags=re.M)
    found = {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    return [found.get(i, "<never ran>") for i in range(n)]


def check(block: Block, stdout: str, stderr: str) -> list[str]:
    """Return what is wrong with one block's run (empty: it did what its page says)."""
    if stdout == "<never ran>":
        return ["the block never ran (an earlier block ended the shell)"]
    problems = [f"command failed: {ln.partition('failed:')[2].strip()}"
                for ln in stderr.splitlines() if ln.startswith(f"{MARK} failed")]
    items = output_items(stdout)
    matched: set[int] = set()
    pos = 0
    for want in block.expected:
        hit = next((i for i in range(pos, len(items)) if matches(want, items[i])), None)
        if hit is None:
            problems.append(f"documented output not printed: {want}")
            continue
        matched.add(hit)
        pos = hit + 1
    for i, (value, raw) in enumerate(items):
        if i not in matched and isinstance(value, dict) and "error" in value:
            problems.append(f"an error the page does not document: {raw[:200]}")
    return problems


def output_items(text: str) -> list[tuple[Any, str]]:
    """Split output into JSON documents (concatenated or not) and plain lines."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        if text[i] in "{[":
            try:
                value, end = decoder.raw_decode(text, i)
                out.append((value, text[i:end]))
                i = end
                continue
            except ValueError:
                pass
        end = text.find("\n", i)
        end = len(text) if end < 0 else end
        out.append((None, text[i:end]))
        i = end
    return out


def matches(want: str, item: tuple[Any, str]) -> bool:
    value, raw = item
    if want[:1] in "{[":
        try:
            expected = json.loads(want)
        except ValueError:
            return want in raw
        return value is not None and subset(expected, value)
    return want in raw


def subset(expected: Any, actual: Any) -> bool:
    """Whether ``actual`` holds everything ``expected`` shows."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and subset(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) <= len(actual) and all(
            subset(e, a) for e, a in zip(expected, actual, strict=False))
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return bool(expected == actual) and (type(expected) is type(actual)
                                         or {type(expected), type(actual)} == {int, float})


def report(outcomes: list[Outcome]) -> str:
    """Describe every failed block with its output, for an assertion message."""
    parts = []
    for o in outcomes:
        if o.problems:
            parts.append(f"--- {o.block.where}\n" + "\n".join(o.problems)
                         + f"\nstdout:\n{o.stdout[-1500:]}\nstderr:\n{o.stderr[-1500:]}")
    return "\n".join(parts)
