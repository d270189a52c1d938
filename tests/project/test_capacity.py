"""docs/capacity.md cannot drift from the figures the bench wrote, nor from its own formula.

- The generated block of the page is exactly what ``bench.capacity.markdown`` makes of
  ``bench/capacity.json`` (the measured runs, the model inputs derived from them, the
  assumptions): a figure edited by hand, or a bench re-run without re-rendering, fails.
- The sizing table follows from the page's own inputs and assumptions tables by the formula
  the page states, implemented again here from the text (not by calling the bench's code).
Each has a negative control: a copy of the page with one number changed is caught.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

import pytest

from helpers import ROOT

if str(ROOT) not in sys.path:  # `bench/` sits beside `src/`, outside the package
    sys.path.insert(0, str(ROOT))

from bench import capacity  # noqa: E402

from helpers import ROOT

DOC = ROOT / "docs" / "capacity.md"
FIGURES = ROOT / "bench" / "capacity.json"


def figures() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIGURES.read_text())
    return data


def block_problems(doc: str, figs: dict[str, Any]) -> list[str]:
    problems = []
    if figs["inputs"] != capacity.model_inputs(figs["runs"]):
        problems.append("the inputs are not those the runs give")
    if figs["assumptions"] != capacity.ASSUMPTIONS:
        problems.append("the assumptions differ from bench/capacity.py's")
    start, end = doc.find(capacity.BEGIN), doc.find(capacity.END)
    if start < 0 or end < 0:
        return [*problems, "no generated block"]
    if doc[start:end + len(capacity.END)] + "\n" != capacity.markdown(figs):
        problems.append("the generated block is not what bench/capacity.json gives")
    return problems


def test_capacity_page_shows_exactly_the_bench_figures() -> None:
    figs = figures()
    assert [r["masters"] for r in figs["runs"]] == [1, 2, 3]
    for r in figs["runs"]:
        for name in ("ingest_batch_1000", "ingest_single", "query_page", "report"):
            assert r[name]["errors"] == 0 and r[name]["redis_cpu_us"] > 0, (r["masters"], name)
        assert r["memory"]["redis_bytes_per_event"] > 0
    assert len(figs["machine"]["load_avg"]) == 3 and len(figs["load_avg_after"]) == 3
    assert block_problems(DOC.read_text(), figs) == []


@pytest.mark.parametrize("where", ["page", "figures"])
def test_capacity_block_check_catches_an_edited_figure(where: str) -> None:
    doc, figs = DOC.read_text(), figures()
    value = figs["inputs"]["redis_bytes_per_event"]
    if where == "page":
        doc = doc.replace(f"| `redis_bytes_per_event` | {value} |",
                          f"| `redis_bytes_per_event` | {value / 2} |")
    else:
        figs["runs"][0]["memory"]["redis_bytes_per_event"] = value * 3
    assert block_problems(doc, figs)


def _table(doc: str, header_start: str) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with ``header_start``."""
    lines = doc.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith(header_start))
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip().strip("`") for c in ln.strip("|").split("|")])
    return rows


def _num(cell: str) -> float:
    return float(cell.replace(",", ""))


def formula_problems(doc: str) -> list[str]:
    """Recompute the sizing table from the page's inputs and assumptions (its formula)."""
    f = {k: _num(v) for k, v in _table(doc, "| input |")}
    a = {k: _num(v) for k, v in _table(doc, "| assumption |")}
    problems = []
    for row in _table(doc, "| watches |"):
        w = _num(row[0])
        r = w * a["logs_per_watch_per_minute"] / 60                                    # 1
        n = w * a["logs_per_watch_per_minute"] * 1440 * (a["retention_days"] + 1)      # 2
        d = n * f["redis_bytes_per_event"] / 1e9                                       # 3
        q = w * a["pages_per_watch_per_day"] / 86400                                   # 4
        c = (r * f["redis_cpu_us_per_single_log"] + q * f["redis_cpu_us_per_page"]
             + a["reports_per_minute"] / 60 * f["redis_cpu_us_per_report"]) / 1e6      # 5
        by_cpu = math.ceil(c / (a["cores_per_master"] * a["cpu_utilisation"]))
        by_mem = math.ceil(d / a["maxmemory_gb_per_master"])
        masters = max(by_cpu, by_mem, a["min_masters"])                                # 6
        copies = 1 + a["replicas_per_master"]                                          # 7
        per_worker = a["api_cores_per_worker"] * a["cpu_utilisation"]                  # 8
        producer = max(math.ceil(r * f["api_cpu_us_per_single_log"] / 1e6 / per_worker),
                       a["min_workers_per_api"])
        consumer = max(math.ceil(q * f["api_cpu_us_per_page"] / 1e6 / per_worker),
                       a["min_workers_per_api"])
        want: list[str | float] = [w, r, n, d, c, f"{by_cpu} / {by_mem}", masters,
                                   masters * copies, d * copies, producer, consumer]
        for col, (cell, value) in enumerate(zip(row, want, strict=True)):
            ok = cell == value if isinstance(value, str) else \
                math.isclose(_num(cell), value, rel_tol=0.01, abs_tol=0.6)
            if not ok:
                problems.append(f"{row[0]} watches, column {col + 1}: {cell} != {value}")
    return problems


def test_capacity_formula_reproduces_the_sizing_table() -> None:
    doc = DOC.read_text()
    assert len(_table(doc, "| watches |")) == 3
    assert formula_problems(doc) == []


@pytest.mark.parametrize("edit", ["input", "assumption"])
def test_capacity_formula_check_catches_a_table_that_does_not_follow(edit: str) -> None:
    doc = DOC.read_text()
    if edit == "input":
        doc = re.sub(r"\| `redis_bytes_per_event` \| [\d.]+ \|",
                     "| `redis_bytes_per_event` | 100 |", doc)
    else:
        doc = re.sub(r"\| `replicas_per_master` \| \d+ \|", "| `replicas_per_master` | 2 |", doc)
    assert formula_problems(doc)
