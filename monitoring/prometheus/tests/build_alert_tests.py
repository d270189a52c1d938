"""Write alerts_test.yml: promtool unit tests for every alert in ../rules/alerts.yml.

Run: ``python monitoring/prometheus/tests/build_alert_tests.py`` after editing rules or cases,
then ``promtool test rules monitoring/prometheus/tests/*.yml``. tests/test_monitoring_rules.py
fails if the YAML is stale.

Why generate: promtool compares annotations verbatim, so every expected alert repeats its
summary, description and runbook with the labels and value filled in. Rendering them here from
alerts.yml (a small subset of Go templating: ``$labels.x``, ``$value`` and ``$value | fn`` with
the formatted value given by the case) keeps the cases about *when* alerts fire; promtool's
real template engine still checks the result.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = {rule["alert"]: rule
         for group in yaml.safe_load((HERE.parent / "rules" / "alerts.yml").read_text())["groups"]
         for rule in group["rules"]}

Case = dict[str, Any]
REQ = 'watchlog_http_requests_total{service="%s",route="%s",method="%s",status="%s",injected="%s"}'
BUCKET = ('watchlog_http_request_duration_seconds_bucket'
          '{service="%s",route="%s",method="GET",le="%s"}')
LAG = 'watchlog_extraction_lag{job="consumer",instance="consumer-app:5002",extractor="%s"}'
ACT = "/v1/activities"
USER = "/v1/users/<user_id>/activities"


def alert(name: str, labels: dict[str, str], value: str = "") -> dict[str, Any]:
    """An expected alert; ``value`` is ``$value`` as its template formats it (e.g. "9.091%")."""

    def render(text: str) -> str:
        text = re.sub(r"\{\{ \$value( \| \w+)? \}\}", value, text)
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)

    rule = RULES[name]
    return {"exp_labels": {**labels, "severity": rule["labels"]["severity"]},
            "exp_annotations": {k: render(v) for k, v in rule["annotations"].items()}}


def check(at: str, name: str, *alerts: dict[str, Any]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": list(alerts)}


def series(name: str, values: str) -> dict[str, str]:
    return {"series": name, "values": values}


def requests(svc: str, route: str, status: str, per_min: int, minutes: int, *,
             injected: str = "false", method: str = "POST") -> dict[str, str]:
    return series(REQ % (svc, route, method, status, injected), f"0+{per_min}x{minutes}")


def latency(svc: str, route: str, fast: int, slow: int, minutes: int) -> list[dict[str, str]]:
    """Cumulative buckets: ``fast`` requests a minute under 0.1 s, ``slow`` in 0.25-0.5 s."""
    per_bucket = {"0.05": 0, "0.1": fast, "0.25": fast, "0.5": fast + slow, "1": fast + slow,
                  "+Inf": fast + slow}
    return [series(BUCKET % (svc, route, le), f"0+{n}x{minutes}")
            for le, n in per_bucket.items()]


def simulator(instance: str, sent: int, acked: int, failed: int) -> list[dict[str, str]]:
    name = '%s{job="simulator",instance="%s"}'
    return [series(name % (f"watchlog_simulator_{k}_total", instance), f"0+{n}x20")
            for k, n in (("sent", sent), ("acknowledged", acked), ("failed", failed))]


def redis(metric: str, node: int, values: str, job: str = "redis") -> dict[str, str]:
    return series(f'{metric}{{job="{job}",instance="redis-node-{node}:6379"}}', values)


def service_cases() -> list[Case]:
    return [{
        "name": "WatchlogServiceDown: a producer that stops answering pages after 1m; "
                "a stopped simulator is not an outage",
        "interval": "15s",
        "input_series": [
            series('up{job="producer",instance="producer-app:5001"}', "1 1 0x10"),
            series('up{job="consumer",instance="consumer-app:5002"}', "1x12"),
            series('up{job="simulator",instance="producer-client:9101"}', "0x12"),
        ],
        "alert_rule_test": [
            check("1m", "WatchlogServiceDown"),  # pending, not firing yet
            check("2m", "WatchlogServiceDown",
                  alert("WatchlogServiceDown", {"job": "producer",
                                                "instance": "producer-app:5001"})),
        ],
    }]


def slo_cases() -> list[Case]:
    # round(): sums of rates are added in no fixed order, so the last bit differs run to run.
    return [{
        "name": "WatchlogErrorBudgetBurnFast: 9% real 500s for 70m fire through the 1h/5m pair",
        "interval": "1m",
        "input_series": [
            requests("producer", ACT, "201", 600, 80), requests("producer", ACT, "500", 60, 80),
            requests("consumer", USER, "200", 600, 80, method="GET"),
            # /metrics scrapes are outside the SLO population.
            requests("producer", "/metrics", "200", 12, 80, method="GET"),
        ],
        "alert_rule_test": [
            check("70m", "WatchlogErrorBudgetBurnFast",
                  alert("WatchlogErrorBudgetBurnFast", {"service": "producer"}, "9.091%")),
            # A fast burn is also a slow one; Alertmanager inhibits the ticket while it pages.
            check("70m", "WatchlogErrorBudgetBurnSlow",
                  alert("WatchlogErrorBudgetBurnSlow", {"service": "producer"}, "9.091%")),
        ],
        "promql_expr_test": [{
            "expr": "round(service:watchlog_slo_errors:ratio_rate5m, 0.0001)", "eval_time": "70m",
            "exp_samples": [{"labels": '{service="consumer"}', "value": 0},
                            {"labels": '{service="producer"}', "value": 0.0909}]}],
    }, {
        "name": "WatchlogErrorBudgetBurnFast: 1% real 503s for 7h fire through the 6h/30m pair",
        "interval": "1m",
        "input_series": [
            requests("consumer", "/v1/reports/daily", "200", 990, 430, method="GET"),
            requests("consumer", "/v1/reports/daily", "503", 10, 430, method="GET"),
        ],
        "alert_rule_test": [
            check("7h", "WatchlogErrorBudgetBurnFast",
                  alert("WatchlogErrorBudgetBurnFast", {"service": "consumer"}, "1%")),
        ],
    }, {
        "name": "WatchlogErrorBudgetBurnFast: injected 5xx and real 4xx never burn the budget",
        "interval": "1m",
        "input_series": [
            requests("producer", ACT, "201", 350, 80),
            requests("producer", ACT, "500", 400, 80, injected="true"),  # half of all responses
            requests("producer", ACT, "503", 100, 80, injected="true"),
            requests("producer", ACT, "422", 100, 80),  # the client's mistakes
            requests("producer", ACT, "401", 50, 80),
        ],
        "alert_rule_test": [check("70m", "WatchlogErrorBudgetBurnFast")],
        "promql_expr_test": [
            {"expr": "round(service:watchlog_http_injected:ratio_rate5m, 0.001)",
             "eval_time": "70m", "exp_samples": [{"labels": '{service="producer"}', "value": 0.5}]},
            {"expr": "service:watchlog_slo_errors:ratio_rate1h", "eval_time": "70m",
             "exp_samples": [{"labels": 'service:watchlog_slo_errors:ratio_rate1h'
                                        '{service="producer"}', "value": 0}]},
        ],
    }, {
        "name": "WatchlogErrorBudgetBurnFast: a 6-minute blip after 7 quiet hours does not page",
        "interval": "1m",
        "input_series": [
            requests("producer", ACT, "201", 600, 420),
            # 60 errors a minute for the last 6 minutes: 1h ratio ~1%, 6h ratio ~0.17%.
            series(REQ % ("producer", ACT, "POST", "500", "false"),
                   "0x414 60 120 180 240 300 360"),
        ],
        "alert_rule_test": [check("7h", "WatchlogErrorBudgetBurnFast")],
    }, {
        "name": "WatchlogErrorBudgetBurnSlow: 0.5% real errors for a day open a ticket, not a page",
        "interval": "1m",
        "input_series": [
            requests("consumer", "/v1/reports/daily", "200", 995, 1560, method="GET"),
            requests("consumer", "/v1/reports/daily", "500", 5, 1560, method="GET"),
        ],
        "alert_rule_test": [
            check("25h", "WatchlogErrorBudgetBurnSlow",
                  alert("WatchlogErrorBudgetBurnSlow", {"service": "consumer"}, "0.5%")),
            check("25h", "WatchlogErrorBudgetBurnFast"),
        ],
    }, {
        "name": "WatchlogErrorBudgetBurnSlow: 0.05% real errors stay within the SLO",
        "interval": "1m",
        "input_series": [
            requests("consumer", "/v1/reports/daily", "200", 1999, 1560, method="GET"),
            requests("consumer", "/v1/reports/daily", "500", 1, 1560, method="GET"),
        ],
        "alert_rule_test": [check("25h", "WatchlogErrorBudgetBurnSlow")],
    }]


def latency_cases() -> list[Case]:
    return [{
        "name": "WatchlogLatencyP99High: a slow route warns after 10m; fast, export and "
                "delay-injected routes do not",
        "interval": "1m",
        "input_series": [
            *latency("consumer", USER, 0, 100, 30),
            requests("consumer", USER, "200", 100, 30, method="GET"),
            *latency("consumer", "/v1/reports/daily", 100, 0, 30),
            requests("consumer", "/v1/reports/daily", "200", 100, 30, method="GET"),
            # A streamed export is long by nature.
            *latency("consumer", "/v1/activities/export", 0, 100, 30),
            requests("consumer", "/v1/activities/export", "200", 100, 30, method="GET"),
            # Slow only because 5% of its requests get an injected delay: p99 measures that.
            *latency("producer", ACT, 0, 100, 30), requests("producer", ACT, "201", 100, 30),
            series('watchlog_faults_injected_total{service="producer",route="/v1/activities",'
                   'kind="delay"}', "0+5x30"),
        ],
        "alert_rule_test": [
            check("8m", "WatchlogLatencyP99High"),  # pending for 10m
            check("20m", "WatchlogLatencyP99High",
                  alert("WatchlogLatencyP99High", {"service": "consumer", "route": USER},
                        "497.5ms")),
        ],
    }]


def redis_cases() -> list[Case]:
    return [{
        "name": "RedisNodeDown: a dead or hung node pages; the exporter's own redis_up does not",
        "interval": "15s",
        "input_series": [
            redis("redis_up", 1, "1x12"), redis("redis_up", 2, "1 0x11"),
            series('redis_up{job="redis_exporter",instance="redis-exporter:9121"}', "0x12"),
            redis("up", 1, "1x12"), redis("up", 2, "1x12"),
            # Hung node: the exporter answers after the scrape timeout, so no redis_up at all.
            redis("up", 3, "1 0x11"),
        ],
        "alert_rule_test": [
            check("30s", "RedisNodeDown"),
            check("2m", "RedisNodeDown",
                  alert("RedisNodeDown", {"job": "redis", "instance": "redis-node-2:6379"}),
                  alert("RedisNodeDown", {"job": "redis", "instance": "redis-node-3:6379"})),
        ],
    }, {
        "name": "RedisClusterStateNotOk: state fail or unserved slots page",
        "interval": "15s",
        "input_series": [
            redis("redis_cluster_state", 1, "0x12"),
            redis("redis_cluster_slots_ok", 1, "10923x12"),
            redis("redis_cluster_state", 2, "1x12"),
            redis("redis_cluster_slots_ok", 2, "16000x12"),
            redis("redis_cluster_state", 3, "1x12"),
            redis("redis_cluster_slots_ok", 3, "16384x12"),
        ],
        "alert_rule_test": [
            check("2m", "RedisClusterStateNotOk",
                  alert("RedisClusterStateNotOk",
                        {"job": "redis", "instance": "redis-node-1:6379"}, "0"),
                  alert("RedisClusterStateNotOk",
                        {"job": "redis", "instance": "redis-node-2:6379"}, "16000")),
        ],
    }, {
        "name": "RedisClusterStateNotOk: a healthy cluster, and a node that is merely down, "
                "stay quiet",
        "interval": "15s",
        "input_series": [
            *(redis("redis_cluster_state", n, "1x12") for n in (1, 2)),
            *(redis("redis_cluster_slots_ok", n, "16384x12") for n in (1, 2)),
            # An unreachable node has no cluster_* series: RedisNodeDown covers it.
            redis("redis_up", 3, "0x12"),
        ],
        "alert_rule_test": [check("2m", "RedisClusterStateNotOk")],
    }, {
        "name": "RedisMemoryNearMax: 95% of maxmemory warns; no maxmemory or 50% do not",
        "interval": "1m",
        "input_series": [
            redis("redis_memory_used_bytes", 1, "95x10"),
            redis("redis_memory_max_bytes", 1, "100x10"),
            redis("redis_memory_used_bytes", 2, "95x10"),
            redis("redis_memory_max_bytes", 2, "0x10"),  # unlimited
            redis("redis_memory_used_bytes", 3, "50x10"),
            redis("redis_memory_max_bytes", 3, "100x10"),
        ],
        "alert_rule_test": [
            check("3m", "RedisMemoryNearMax"),
            check("6m", "RedisMemoryNearMax",
                  alert("RedisMemoryNearMax", {"job": "redis", "instance": "redis-node-1:6379"},
                        "95%")),
        ],
    }]


def pipeline_cases() -> list[Case]:
    return [{
        "name": "WatchlogExtractionLagGrowing: a large, growing backlog warns; "
                "large-but-flat or small ones do not",
        "interval": "1m",
        "input_series": [
            series(LAG % "warehouse", "0+200x40"),
            series(LAG % "steady", "5000x40"),
            series(LAG % "small", "0+10x40"),
        ],
        "alert_rule_test": [
            check("10m", "WatchlogExtractionLagGrowing"),
            check("20m", "WatchlogExtractionLagGrowing",
                  alert("WatchlogExtractionLagGrowing", {"extractor": "warehouse"}, "4000")),
        ],
    }, {
        "name": "WatchlogExtractionLagGrowing: a backlog being drained does not warn",
        "interval": "1m",
        "input_series": [series(LAG % "warehouse", "9000-100x40")],
        "alert_rule_test": [check("20m", "WatchlogExtractionLagGrowing")],
    }, {
        "name": "WatchlogSimulatorFailing: 10% failures, or nothing acknowledged, warn; "
                "1% failures or an idle simulator do not",
        "interval": "1m",
        "input_series": [*simulator("sim-a:9101", 100, 90, 10), *simulator("sim-b:9101", 100, 0, 0),
                         *simulator("sim-c:9101", 100, 99, 1), *simulator("sim-d:9101", 0, 0, 0)],
        "alert_rule_test": [
            check("4m", "WatchlogSimulatorFailing"),
            check("15m", "WatchlogSimulatorFailing",
                  alert("WatchlogSimulatorFailing", {"job": "simulator", "instance": "sim-a:9101"},
                        "10%"),
                  alert("WatchlogSimulatorFailing", {"job": "simulator", "instance": "sim-b:9101"},
                        "0%")),
        ],
    }]


HEADER = """\
# GENERATED by build_alert_tests.py (same directory): edit that file, not this one.
# promtool unit tests for every alert in ../rules/alerts.yml: each fires when it should and
# stays silent when it should not. Run: promtool test rules monitoring/prometheus/tests/*.yml

"""


def render() -> str:
    doc = {"rule_files": ["../rules/recording.yml", "../rules/alerts.yml"],
           "evaluation_interval": "1m",
           "tests": [*service_cases(), *slo_cases(), *latency_cases(), *redis_cases(),
                     *pipeline_cases()]}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


def main() -> int:
    path = HERE / "alerts_test.yml"
    path.write_text(render())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
