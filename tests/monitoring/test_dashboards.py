"""Dashboard queries: extraction (pure), and every query run against a live Prometheus.

The live test needs ``live_prometheus_url`` (tests/conftest.py): a Prometheus that has scraped
every job of the native stack for at least 30 s while the simulator sends logs. A query that
errors, or that returns no series, is a panel that would show "Error" or "No data" on a healthy
system — a broken panel, whatever promtool thinks of its syntax.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dashboards import iter_panels, panel_queries, substitute, variable_queries, variable_values

from watchlog.launcher.monitoring import monitoring_root

DASHBOARDS = sorted((monitoring_root() / "grafana" / "dashboards").glob("*.json"))


def _dashboard(*panels: dict[str, Any], variables: list[dict[str, Any]] | None = None) -> dict:
    return {"panels": list(panels), "templating": {"list": variables or []}}


# --- extraction (no Prometheus needed) -----------------------------------------------------------


def test_panel_queries_substitute_variables_with_their_all_value() -> None:
    dashboard = _dashboard(
        {"title": "Rate", "targets": [
            {"expr": 'sum(rate(x{service=~"$service"}[$__rate_interval]))'},
            {"expr": 'y{node=~"${node}", z=~"${service:regex}"}[$__interval]'},
        ]},
        variables=[{"name": "service", "allValue": ".+"}, {"name": "node"}],
    )
    assert panel_queries(dashboard) == [
        ("Rate", 'sum(rate(x{service=~".+"}[1m]))'),
        ("Rate", 'y{node=~".*", z=~".+"}[15s]'),
    ]


def test_panel_queries_reach_into_rows_and_skip_hidden_or_empty_targets() -> None:
    dashboard = _dashboard(
        {"type": "row", "title": "Row", "collapsed": True, "panels": [
            {"title": "Inner", "targets": [{"expr": "up"}, {"expr": "down", "hide": True}]}]},
        {"title": "Text", "type": "text"},
        {"title": "Blank", "targets": [{"expr": ""}]},
    )
    assert panel_queries(dashboard) == [("Inner", "up")]
    assert [p["title"] for p in iter_panels(dashboard)] == ["Inner", "Text", "Blank"]


def test_substitute_rejects_unknown_variables() -> None:
    with pytest.raises(KeyError, match=r"\$nope"):
        substitute('x{a=~"$nope"}', variable_values(_dashboard()))


def test_longer_variable_names_are_not_cut_short() -> None:
    values = {"service": "S", "service_route": "R"}
    assert substitute("$service_route $service", values) == "R S"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_shipped_query_expands_without_leftover_variables(path: Path) -> None:
    queries = panel_queries(json.loads(path.read_text()))
    assert queries
    for title, expr in queries:
        assert "$" not in expr, f"{path.name} / {title}: {expr}"


# --- live ----------------------------------------------------------------------------------------


def _get(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:  # 400/422: Prometheus explains in the body
        return json.loads(e.read() or b"{}") or {"status": "error", "error": str(e)}


def _problem(base: str, expr: str) -> str | None:
    """Return why ``expr`` would leave its panel broken, or None if it shows data."""
    instant = _get(base, "/api/v1/query", query=expr)
    if instant.get("status") != "success":
        return f"error: {instant.get('error')}"
    if not instant["data"]["result"]:
        return "no series (instant query)"
    # Range query over the last minute, as a time-series panel asks: catches expressions that
    # only have data at the instant (and checks the step handling Grafana relies on).
    now = _get(base, "/api/v1/query", query="time()")["data"]["result"][0]
    ranged = _get(base, "/api/v1/query_range", query=expr, start=str(float(now) - 60),
                  end=str(now), step="5")
    if ranged.get("status") != "success":
        return f"error (range): {ranged.get('error')}"
    if not ranged["data"]["result"]:
        return "no series (range query over the last minute)"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_return_series_from_live_prometheus(
    path: Path, live_prometheus_url: str
) -> None:
    dashboard = json.loads(path.read_text())
    broken = []
    for name, selector in variable_queries(dashboard):
        series = _get(live_prometheus_url, "/api/v1/series", **{"match[]": selector})
        if series.get("status") != "success" or not series["data"]:
            broken.append(f"variable ${name}: {selector}: no series")
    for title, expr in panel_queries(dashboard):
        problem = _problem(live_prometheus_url, expr)
        if problem:
            broken.append(f"{title}: {problem}\n    {expr}")
    assert not broken, f"{path.name}: broken panels:\n" + "\n".join(broken)


@pytest.mark.slow
def test_live_prometheus_scrapes_every_target_of_the_native_stack(
        live_prometheus_url: str, live_stack: dict[str, str]) -> None:
    """Every job of `watchlog up` is up, with one redis target per cluster node."""
    with urllib.request.urlopen(live_prometheus_url + "/api/v1/targets", timeout=10) as r:
        targets = json.load(r)["data"]["activeTargets"]
    health = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in targets}
    assert all(h == "up" for h in health.values()), health
    jobs = {job for job, _ in health}
    assert {"producer", "consumer", "simulator", "extractor", "redis", "redis_exporter",
            "prometheus"} <= jobs
    with urllib.request.urlopen(live_stack["producer"] + "/ready", timeout=10) as r:
        assert json.load(r)["status"] == "ready"
    redis_nodes = {inst for job, inst in health if job == "redis"}
    assert len(redis_nodes) == 3
    # The exporter's per-command latency series are dropped at scrape (nothing reads them).
    dropped = _get(live_prometheus_url, "/api/v1/query",
                   query='count({__name__=~"redis_latency_percentiles_usec.*"})')
    assert dropped["data"]["result"] == []
    kept = _get(live_prometheus_url, "/api/v1/query", query="count(redis_commands_total)")
    assert kept["data"]["result"]


@pytest.mark.slow
def test_watchlog_up_wires_alertmanager_and_the_sink(live_prometheus_url: str,
                                                     live_stack: dict[str, str]) -> None:
    """Prometheus → Alertmanager → alert sink → `watchlog alerts`, as `watchlog up` runs them."""
    import time

    from click.testing import CliRunner

    from watchlog.cli.alerts import alerts

    managers = _get(live_prometheus_url, "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [m["url"] for m in managers] == [live_stack["alertmanager"] + "/api/v2/alerts"]
    deadline = time.monotonic() + 90
    while True:  # the Watchdog is sent at once (group_wait 0s), then every minute
        result = CliRunner().invoke(alerts, ["--state-dir", live_stack["state_dir"], "--json"])
        assert result.exit_code == 0, result.output
        if json.loads(result.output)["heartbeat"] is not None:
            break
        assert time.monotonic() < deadline, "no Watchdog heartbeat reached the sink"
        time.sleep(2)
    shown = CliRunner().invoke(alerts, ["--state-dir", live_stack["state_dir"]])
    assert "heartbeat: last" in shown.output and "LATE" not in shown.output


def _fault(live_stack: dict[str, str], fault: str) -> tuple[Callable[[], None], str]:
    """Inject ``fault`` into the live stack; return how to undo it and the job it takes down."""
    import os
    import signal

    from watchlog.core.credentials import load_or_create
    from watchlog.launcher.redis.cluster import LocalCluster

    state = Path(live_stack["state_dir"])
    pids = {e["component"]: e["pid"]
            for e in json.loads((state / "pids.json").read_text())["services"]}
    if fault in ("exporter hung", "extractor stopped"):
        pid = pids["redis-exporter" if fault == "exporter hung" else "extractor"]
        os.kill(pid, signal.SIGSTOP)
        return (lambda: os.kill(pid, signal.SIGCONT)), \
            "redis_exporter" if fault == "exporter hung" else "extractor"
    cluster = LocalCluster.from_state(state, load_or_create(state))
    assert cluster is not None
    victim = cluster.ports[-1]
    cluster.kill(victim)
    return (lambda: cluster.start_node(victim)), "redis"


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 90) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(2)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["node killed", "exporter hung", "extractor stopped"])
def test_dashboards_show_state_not_no_data_under_faults(live_prometheus_url: str,
                                                        live_stack: dict[str, str],
                                                        fault: str) -> None:
    """Every panel still returns a value while a job is down: DOWN, not "No data"."""
    base = live_prometheus_url

    def down(job: str) -> bool:
        result = _get(base, "/api/v1/query", query=f'min(up{{job="{job}"}})')["data"]["result"]
        if job == "redis":  # a killed node reads redis_up 0 through a healthy exporter
            result = _get(base, "/api/v1/query",
                          query='min(redis_up{job="redis"})')["data"]["result"]
        return bool(result) and result[0]["value"][1] == "0"

    def read_failures() -> float:
        got = _get(base, "/api/v1/query",
                   query="sum(watchlog_scrape_read_failures_total)")["data"]["result"]
        return float(got[0]["value"][1]) if got else 0.0

    failures = read_failures()
    undo, job = _fault(live_stack, fault)
    try:
        _wait_until(lambda: down(job), f"Prometheus to see {job} down")
        if fault == "node killed":  # the consumer's scrape-time reads fail, and say so
            _wait_until(lambda: read_failures() > failures, "failed scrape-time reads counted")
        # Two more scrapes of the fault inside the range queries' window, as a dashboard shows.
        import time
        time.sleep(10)
        broken = []
        for path in DASHBOARDS:
            for title, expr in panel_queries(json.loads(path.read_text())):
                problem = _problem(base, expr)
                if problem:
                    broken.append(f"{path.name} / {title}: {problem}\n    {expr}")
        assert not broken, f"with the {fault}, broken panels:\n" + "\n".join(broken)
    finally:
        undo()
    _wait_until(lambda: not down(job), f"{job} back up")
