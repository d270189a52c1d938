"""Run every scenario and ceiling once, in one run: ``python -m bench [--quick|--full]``."""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

import bench.formats as formats  # on a line of its own: fewer merge conflicts
from bench import (
    ceilings,
    durability,
    ingest,
    memory,
    profile,
    reads,
    report,
    sysinfo,
    validation,
    wsgi,
)
from bench.modes import MODES, Mode
from bench.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
console = Console(stderr=True)


def step(results: dict[str, Any], section: str, name: str, fn: Any, *args: Any) -> Any:
    """Run one measurement, print a line, store its figures under ``section.name``."""
    t0 = time.monotonic()
    console.print(f"[bold]{section}/{name}[/] …", end=" ")
    value = fn(*args)
    target = results if section == "-" else results.setdefault(section, {})
    target[name] = value
    summary = {k: value[k] for k in ("rps", "events_per_s", "calls_per_s", "p99_ms",
                                     "errors") if isinstance(value, dict) and k in value}
    console.print(f"{summary} ({time.monotonic() - t0:.1f} s)")
    return value


def writes(r: dict[str, Any], stack: Stack, mode: Mode, run: str, work: Path) -> None:
    trivial = stack.serve_trivial("trivial")
    step(r, "ceilings", "trivial", ingest.trivial, stack, trivial, mode, run)
    stack.stop_service("trivial")
    step(r, "ceilings", "direct_write", ceilings.direct_write, stack, mode.direct_events, run)
    step(r, "ceilings", "redis_benchmark", ceilings.redis_benchmark, stack, mode.rb_requests)
    step(r, "ceilings", "function_floor", ceilings.function_floor, stack,
         mode.direct_events // 20, run)
    naive = stack.serve_naive("naive")
    seed = stack.serve_seed("seed")
    prod = stack.serve_watchlog("producer")
    # The naive endpoint, the seed's producer and the single-log POST in interleaved rounds;
    # the median of each.
    rounds: dict[str, Any] = {}
    for n in range(mode.single_rounds):
        step(rounds, "naive", str(n), ingest.trivial, stack, naive, mode, f"{run}n{n}")
        step(rounds, "seed", str(n), ingest.trivial, stack, seed, mode, f"{run}s{n}")
        step(rounds, "single_post", str(n), ingest.post, stack, prod, mode, 1, f"{run}b1r{n}")
    stack.stop_service("naive")
    stack.stop_service("seed")
    for peer in ("naive", "seed"):
        r.setdefault("ceilings", {})[peer] = _median(list(rounds[peer].values()))
    r.setdefault("scenarios", {})["single_post"] = _median(
        list(rounds["single_post"].values()))
    r["single_rounds"] = {k: [x["rps"] for x in v.values()] for k, v in rounds.items()}
    for batch, name in ((100, "batch_100"), (1000, "batch_1000")):
        step(r, "scenarios", name, ingest.post, stack, prod, mode, batch, f"{run}b{batch}")
    rps = r["scenarios"]["batch_1000"]["rps"]
    for enc in ("identity", "gzip", "zstd"):
        step(r, "scenarios", f"batch_1000_{enc}", ingest.post_pool, stack, prod, mode, enc,
             run, rps, work)
    if profile.available():
        for batch in mode.profile_batches:
            step(r, "profile", f"producer, {batch} log(s)/request", profile.profile, stack,
                 prod, mode, batch, f"{run}p{batch}", work)
    stack.stop_service("producer")


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median req/s, with every round's req/s beside it."""
    ranked = sorted(results, key=lambda x: x["rps"])
    return {**ranked[len(ranked) // 2], "rounds_rps": [x["rps"] for x in results]}


def reads_(r: dict[str, Any], stack: Stack, mode: Mode, run: str, work: Path) -> None:
    stack.flush()
    users = [reads.QUERY_USER0 + u for u in range(mode.query_users)]
    step(r, "loads", "small", reads.fill, stack, mode.small_store, users, f"{run}q")
    cons = stack.serve_watchlog("consumer")
    paths = reads.query_paths(mode, work)
    step(r, "scenarios", "query_10k", reads.get, stack, cons, mode, paths)
    big = mode.big_store - mode.small_store
    step(r, "loads", "big", reads.fill, stack, big, list(range(mode.fleet_users)), f"{run}f")
    step(r, "scenarios", "query_big", reads.get, stack, cons, mode, paths)
    r["scenarios"]["query_big"]["stored"] = mode.big_store
    step(r, "scenarios", "report", reads.get, stack, cons, mode, reads.report_paths(work))
    step(r, "scenarios", "export", reads.export, stack, cons)
    step(r, "scenarios", "extraction", reads.extraction, stack, cons, mode.extract_events, run)
    step(r, "-", "formats", formats.run, stack, cons, mode.extract_events, run, work)
    stack.stop_service("consumer")
    r["memory"] = {k: r["loads"]["big"][k] for k in (
        "events", "redis_bytes_per_event", "json_bytes_per_event")}
    r["memory"]["share_pct"] = memory.breakdown(stack.cluster)


def run_all(mode: Mode, state: Path | None, replicas: int = 1) -> dict[str, Any]:
    run = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + secrets.token_hex(2)
    r: dict[str, Any] = {"run": run, "mode": mode.name, "machine": sysinfo.machine(),
                         "started": datetime.now(UTC).isoformat(timespec="seconds")}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="watchlog-bench-") as tmp:
        work = Path(tmp)
        stack = Stack.start(state or work / "state")
        try:
            writes(r, stack, mode, run, work)
            reads_(r, stack, mode, run, work)
            step(r, "-", "wsgi", wsgi.compare, stack, mode, run, work)
        finally:
            stack.stop()
        if replicas:
            step(r, "-", "durability", durability.measure, mode, run, work, replicas)
    step(r, "-", "validation", validation.run, mode.validation_rounds)
    r["seconds"] = round(time.monotonic() - t0, 1)
    r["targets"] = report.targets(r)
    return r


@click.command()
@click.option("--quick", "mode", flag_value="quick", help="Seconds: checks the harness runs.")
@click.option("--full", "mode", flag_value="full", default=True, help="Minutes (default).")
@click.option("--output", type=click.Path(path_type=Path), default=ROOT / "bench" / "results",
              show_default=True, help="Directory of the JSON results.")
@click.option("--docs", type=click.Path(path_type=Path), default=ROOT / "docs" / "benchmarks.md",
              show_default=True, help="Markdown file whose generated block is replaced.")
@click.option("--no-docs", is_flag=True, help="Do not touch the Markdown file.")
@click.option("--state", type=click.Path(path_type=Path), default=None,
              help="State directory of the bench cluster (default: a temporary one).")
@click.option("--replicas", type=int, default=1, show_default=True,
              help="Replicas per master of the durability scenario (0: skip it).")
@click.option("--capacity", is_flag=True,
              help="Only the capacity figures with 1, 2, 3 masters (bench/capacity.py).")
@click.pass_context
def main(ctx: click.Context, mode: str, output: Path, docs: Path, no_docs: bool,
         state: Path | None, replicas: int, capacity: bool) -> None:
    """Benchmark watchlog: scenarios, their ceilings and the targets, in one run."""
    if capacity:
        from bench import capacity as capacity_bench
        ctx.invoke(capacity_bench.main)
        return
    r = run_all(MODES[mode], state, replicas)
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{r['run']}.json"
    path.write_text(json.dumps(r, indent=2) + "\n")
    md = report.markdown(r)
    print(md)
    if not no_docs:
        report.write_docs(docs, md)
    console.print(f"results: {path}" + ("" if no_docs else f"; table: {docs}"))
