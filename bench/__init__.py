"""The benchmark harness of issue 7: ``python -m bench [--quick|--full]``.

It starts its own Redis Cluster and services through the launcher, drives load from
separate processes (wrk with Lua scripts; redis-benchmark), measures the ceilings the
targets are ratios of in the same run, and writes ``bench/results/<timestamp>.json`` and
the table in ``docs/benchmarks.md``.
"""
