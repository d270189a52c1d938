"""Quick mode (seconds: the test suite checks the harness runs) and full mode (minutes)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    name: str
    seconds: float  # each wrk scenario
    direct_events: int  # the direct write path's ceiling
    rb_requests: int  # redis-benchmark calls
    small_store: int  # events stored for the "10k" query
    big_store: int  # events stored for the "1M" query, the export and memory per event
    query_users: int  # users the per-user query reads (each with small_store / query_users)
    fleet_users: int  # users of the other events
    extract_events: int  # extraction reads this many
    compare_seconds: float  # WSGI comparison, each server
    validation_rounds: int
    profile_seconds: float
    profile_batches: tuple[int, ...] = (1, 1000)  # logs per request of the profiled loads
    # apps of the WSGI comparison: "query" is the consumer's per-user query of the big store
    compare_targets: tuple[str, ...] = ("trivial", "producer", "query")
    single_rounds: int = 3  # naive endpoint and single-log POST, interleaved


QUICK = Mode("quick", seconds=1, direct_events=10_000, rb_requests=100_000, small_store=10_000,
             big_store=30_000, query_users=50, fleet_users=10_000, extract_events=5_000,
             compare_seconds=1, validation_rounds=3, profile_seconds=1,
             profile_batches=(1000,), compare_targets=("trivial",), single_rounds=1)
FULL = Mode("full", seconds=15, direct_events=200_000, rb_requests=3_000_000,
            small_store=10_000, big_store=1_000_000, query_users=50, fleet_users=100_000,
            extract_events=200_000, compare_seconds=10, validation_rounds=20,
            profile_seconds=10)
MODES = {m.name: m for m in (QUICK, FULL)}
