"""The benchmark harness runs (quick mode) and reports every scenario, ceiling and target.

No timing is asserted: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT

if str(ROOT) not in sys.path:  # `bench/` sits beside `src/`, outside the package
    sys.path.insert(0, str(ROOT))

from bench import profile, report  # noqa: E402

from helpers import ROOT

SCENARIOS = ("single_post", "batch_100", "batch_1000", "batch_1000_identity",
             "batch_1000_gzip", "batch_1000_zstd", "query_10k", "query_big", "report",
             "export", "extraction")
CEILINGS = ("trivial", "naive", "direct_write", "redis_benchmark", "function_floor")
FIGURES = ("server_cpu_cores", "redis_cmds_per_s", "redis_cpu_cores", "redis_mem_mb")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--no-docs",
                           "--output", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("*.json")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


@pytest.mark.slow
def test_bench_quick_reports_every_scenario(results: dict[str, Any]) -> None:
    for name in SCENARIOS:
        s = results["scenarios"][name]
        assert (s.get("rps") or s.get("events_per_s") or 0) > 0, name
        assert s["errors"] == 0, (name, s)
        assert all(s.get(k) is not None for k in FIGURES), (name, s)
    for name in ("single_post", "batch_1000", "query_10k", "query_big", "report"):
        s = results["scenarios"][name]
        assert 0 < s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"], name


@pytest.mark.slow
def test_bench_quick_measures_every_ceiling(results: dict[str, Any]) -> None:
    c = results["ceilings"]
    assert set(CEILINGS) <= set(c)
    assert c["trivial"]["rps"] > 0 and c["trivial"]["errors"] == 0
    assert c["direct_write"]["events_per_s"] > 0
    assert c["direct_write"]["decode_validate_events_per_s"] > 0
    assert c["redis_benchmark"]["calls_per_s"] > 0


@pytest.mark.slow
def test_bench_quick_evaluates_every_target(results: dict[str, Any]) -> None:
    assert len(results["targets"]) == 12
    assert all(t["measured"] is not None and t["met"] in (True, False)
               for t in results["targets"])
    mem = results["memory"]
    assert mem["redis_bytes_per_event"] > 0 and mem["json_bytes_per_event"] > 0
    assert mem["share_pct"]


@pytest.mark.slow
def test_bench_quick_measures_redis_cost_per_log_and_durability(results: dict[str, Any]) -> None:
    c, s = results["ceilings"], results["scenarios"]
    assert c["naive"]["rps"] > 0 and c["naive"]["errors"] == 0
    for d in (c["redis_benchmark"], c["direct_write"], c["function_floor"], s["single_post"],
              s["batch_1000"]):
        assert d["redis_cpu_us_per_event"] > 0
        assert d["commands_per_event"]  # INFO commandstats, per stored log
    # the floor's function wrote only the attempts' answers: no log's own command ran
    writes = {"zadd", "hset", "xadd", "sadd", "hmget", "expireat", "zmscore"}
    assert not writes & set(c["function_floor"]["commands_per_event"])
    assert writes - {"zmscore"} <= set(c["direct_write"]["commands_per_event"])
    assert "fcall" in s["batch_1000"]["commands_per_event"]
    d = results["durability"]
    assert d["replicas"] == 1
    for name in ("single_post", "batch_1000"):
        assert d[name]["events_per_s"] > 0 and d[name]["errors"] == 0
    assert "### Durability" in report.markdown(results)


@pytest.mark.slow
def test_bench_quick_records_the_comparisons(results: dict[str, Any]) -> None:
    assert set(results["wsgi"]) == {f"trivial@{server} 2x{threads}"
                                    for server in ("granian", "gunicorn") for threads in (2, 8)}
    assert all(w["rps"] > 0 and w["errors"] == 0 for w in results["wsgi"].values())
    v = results["validation"]
    assert set(v["validate_us_per_log"]) == {"msgspec", "pydantic_v2"}
    assert set(v["json_us_per_log"]["encode"]) == {"msgspec", "orjson", "json"}
    assert results["machine"]["cores"]


@pytest.mark.slow
def test_bench_markdown_has_a_row_per_scenario(results: dict[str, Any]) -> None:
    md = report.markdown(results)
    for key in (*CEILINGS, *SCENARIOS):
        assert f"| {report.LABELS[key]} |" in md
    assert md.startswith(report.BEGIN) and md.rstrip().endswith(report.END)


def test_write_docs_replaces_only_the_generated_block(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\n## Decisions\n")
    report.write_docs(doc, f"{report.BEGIN}\nnew\n{report.END}\n")
    text = doc.read_text()
    assert "new" in text and "old" not in text
    assert text.index("intro") < text.index("new") < text.index("## Decisions")


def test_profile_summary_counts_self_and_inclusive_time() -> None:
    raw = ("process 1:\"gunicorn\";post (watchlog/api/producer/app.py:10);"
           "to_event (watchlog/core/schema.py:20) 3\n"
           "process 1:\"gunicorn\";post (watchlog/api/producer/app.py:10) 1\n")
    s = profile.summarise(raw)
    assert s["samples"] == 4
    assert dict(s["self_pct"]) == {"watchlog.core.schema.to_event": 75.0,
                                   "watchlog.api.producer.app.post": 25.0}
    assert dict(s["total_pct"])["watchlog.api.producer.app.post"] == 100.0


def test_profile_parts_give_each_sample_to_its_innermost_part() -> None:
    raw = ("process 1:\"granian\";checked (watchlog/api/auth.py:5);"
           "post (watchlog/api/producer/ingest.py:10);ingest (watchlog/store/__init__.py:40) 3\n"
           "process 1:\"granian\";checked (watchlog/api/auth.py:5) 1\n")
    assert dict(profile.hooks(raw)) == {"store + Redis client": 75.0, "auth": 25.0}
