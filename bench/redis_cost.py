"""Redis CPU per stored log against the two-key reference write, in one run.

``python -m bench.redis_cost [--rounds N] [--replicas R] [--quick]`` starts a bench cluster
and, in interleaved rounds, measures the masters' ``used_cpu_sys + used_cpu_user`` over

- ``reference``: redis-benchmark's pipelined two-key Lua write (``HSETNX`` body +
  ``ZADD`` index, ``ceilings.BENCH_LUA``): Redis CPU per call;
- ``single``: ``Store.ingest`` of one log per call (what a one-log request asks of Redis);
- ``batch``: ``Store.ingest`` of 1,000-log batches (what a 1,000-log request asks);
- ``floor``: one-log ``Store.ingest`` calls with ``wl_ingest`` cut before the log's own
  writes (``ceilings.function_floor``): what one call per log costs at least;

and prints each one's Redis µs per log, its ratio to the reference of the same round, and
``INFO commandstats`` per command (calls and µs per stored log). The figures are Redis CPU
time, not wall time, so other load on the machine moves them little; the ratios are taken
within one round. The full bench (``python -m bench``) reports the same figures per
scenario; this module is the quick loop for changes to the store's functions.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from bench import ceilings
from bench.measure import per_event
from bench.stack import Stack


def reference(stack: Stack, requests: int) -> dict[str, Any]:
    r = ceilings.redis_benchmark(stack, requests)
    return {**r, **per_event(r, requests)}


def one_round(stack: Stack, n: int, quick: bool) -> dict[str, Any]:
    scale = 10 if quick else 1
    out = {"reference": reference(stack, 600_000 // scale),
           "single": ceilings.store_ingest(stack, 6_000 // scale, 1, f"rc{n}s"),
           "batch": ceilings.store_ingest(stack, 100_000 // scale, 1000, f"rc{n}b"),
           "floor": ceilings.function_floor(stack, 6_000 // scale, f"rc{n}f")}
    stack.flush()
    ref = out["reference"]["redis_cpu_us_per_event"]
    out["ratios"] = {k: round(out[k]["redis_cpu_us_per_event"] / ref, 2)
                     for k in ("single", "batch", "floor")}
    return out


def summary(rounds: list[dict[str, Any]]) -> str:
    lines = []
    for i, r in enumerate(rounds):
        lines.append(
            f"round {i}: reference {r['reference']['redis_cpu_us_per_event']:.2f} µs/call, "
            f"single {r['single']['redis_cpu_us_per_event']:.2f} µs/log "
            f"({r['ratios']['single']:.2f}×), batch {r['batch']['redis_cpu_us_per_event']:.2f}"
            f" µs/log ({r['ratios']['batch']:.2f}×), floor of a one-log call "
            f"{r['floor']['redis_cpu_us_per_event']:.2f} µs ({r['ratios']['floor']:.2f}×)")
    last = rounds[-1]
    for k in ("single", "batch"):
        lines.append(f"commandstats per stored log, {k} (last round):")
        for name, c in last[k]["commands_per_event"].items():
            lines.append(f"  {name:12} {c['calls']:8.3f} calls  {c['usec']:8.2f} µs  "
                         f"({c['usec_per_call']} µs/call)")
    return "\n".join(lines)


@click.command()
@click.option("--rounds", default=3, show_default=True)
@click.option("--replicas", default=0, show_default=True, help="Replicas per master.")
@click.option("--quick", is_flag=True, help="A tenth of the work (checks the harness).")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Write the figures as JSON here.")
def main(rounds: int, replicas: int, quick: bool, output: Path | None) -> None:
    """Measure Redis CPU per stored log against the two-key reference."""
    os.environ.setdefault("WATCHLOG_WAIT_REPLICAS", str(replicas))
    stack = Stack.start(Path(tempfile.mkdtemp(prefix="watchlog-redis-cost-")),
                        replicas=replicas)
    try:
        results = [one_round(stack, n, quick) for n in range(rounds)]
    finally:
        stack.stop()
    text = summary(results)
    print(text)
    if output:
        output.write_text(json.dumps({"load_avg": os.getloadavg(), "rounds": results},
                                     indent=1) + "\n")


if __name__ == "__main__":
    main()
