"""Write alerts_test.yml: promtool unit tests for every alert in ../rules/alerts.yml.

Run: ``python monitoring/prometheus/tests/build_alert_tests.py`` after editing rules or cases,
then ``promtool test rules monitoring/prometheus/tests/*.yml``. tests/monitoring/test_monitoring_rules.py
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
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)

    rule = RULES[name]
    extra = {k: render(v) for k, v in rule["labels"].items()}
    return {"exp_labels": {**labels, **extra},
            "exp_annotations": {k: render(v) for k, v in rule["annotations"].items()}}


def check(at: str, name: str, *alerts: dict[str, Any]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": list(alerts)}


def series(name: str, values: str) -> dict[str, str]:
    return {"series": name, "values": values}


def tsdb_since(seconds: int, minutes: int) -> dict[str, str]:
    """Prometheus' oldest sample is at ``seconds`` (test time starts at 0)."""
    return series('prometheus_tsdb_lowest_timestamp_seconds{job="prometheus",'
                  'instance="prometheus:9090"}', f"{seconds}x{minutes}")


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


def redis(metric: str, node: int, values: str, job: str = "redis", **labels: str) -> dict[str, str]:
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    return series(f'{metric}{{job="{job}",instance="redis-node-{node}:6379"{extra}}}', values)


def node(n: int) -> dict[str, str]:
    return {"job": "redis", "instance": f"redis-node-{n}:6379"}


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
            # A stopped simulator is the client alert's business, a warning.
            check("2m", "WatchlogClientDown",
                  alert("WatchlogClientDown", {"job": "simulator",
                                               "instance": "producer-client:9101"})),
        ],
    }, {
        "name": "WatchlogServiceDown: an API with no target at all (a stopped compose "
                "container drops out of DNS) pages too",
        "interval": "15s",
        "input_series": [series('up{job="producer",instance="producer-app:5001"}', "1x12")],
        "alert_rule_test": [
            check("2m", "WatchlogServiceDown", alert("WatchlogServiceDown", {"job": "consumer"})),
        ],
    }, {
        "name": "WatchlogServiceDown / WatchlogClientDown: a 45 s restart is a near miss",
        "interval": "15s",
        "input_series": [
            series('up{job="producer",instance="producer-app:5001"}', "1 0 0 0 1x8"),
            series('up{job="consumer",instance="consumer-app:5002"}', "1x12"),
            series('up{job="extractor",instance="consumer-client:9102"}', "1 0 0 0 1x8"),
        ],
        "alert_rule_test": [check("2m", "WatchlogServiceDown"),
                            check("2m", "WatchlogClientDown")],
    }, {
        "name": "WatchlogClientDown: a stopped extractor warns after 1m",
        "interval": "15s",
        "input_series": [series('up{job="extractor",instance="consumer-client:9102"}',
                                "1 0x11")],
        "alert_rule_test": [
            check("2m", "WatchlogClientDown",
                  alert("WatchlogClientDown", {"job": "extractor",
                                               "instance": "consumer-client:9102"})),
        ],
    }, {
        "name": "PrometheusNotificationsFailing: failed sends warn; a healthy link does not",
        "interval": "15s",
        "input_series": [
            series('prometheus_notifications_errors_total{job="prometheus",'
                   'instance="prometheus:9090",alertmanager="http://alertmanager:9093/api/v2/alerts"}',
                   "0+1x40"),
            series('prometheus_notifications_alertmanagers_discovered{job="prometheus",'
                   'instance="prometheus:9090"}', "1x40"),
        ],
        "alert_rule_test": [
            check("1m", "PrometheusNotificationsFailing"),
            check("5m", "PrometheusNotificationsFailing",
                  alert("PrometheusNotificationsFailing",
                        {"job": "prometheus", "instance": "prometheus:9090",
                         "alertmanager": "http://alertmanager:9093/api/v2/alerts"}, "66.67m")),
        ],
    }, {
        "name": "PrometheusNotificationsFailing: an Alertmanager that answers stays quiet",
        "interval": "15s",
        "input_series": [
            series('prometheus_notifications_errors_total{job="prometheus",'
                   'instance="prometheus:9090",alertmanager="http://alertmanager:9093/api/v2/alerts"}',
                   "0x40"),
            series('prometheus_notifications_alertmanagers_discovered{job="prometheus",'
                   'instance="prometheus:9090"}', "1x40"),
        ],
        "alert_rule_test": [check("5m", "PrometheusNotificationsFailing")],
    }, {
        "name": "Watchdog: always firing (the dead man's switch)",
        "interval": "1m",
        "input_series": [],
        "alert_rule_test": [check("1m", "Watchdog", alert("Watchdog", {}))],
    }]


def slo_cases() -> list[Case]:
    # round(): sums of rates are added in no fixed order, so the last bit differs run to run.
    return [{
        "name": "WatchlogErrorBudgetBurnFast: 9% real 500s for 70m fire through the 1h/5m pair",
        "interval": "1m",
        "input_series": [
            tsdb_since(0, 80),
            requests("producer", ACT, "201", 600, 80), requests("producer", ACT, "500", 60, 80),
            requests("consumer", USER, "200", 600, 80, method="GET"),
            # /metrics scrapes are outside the SLO population.
            requests("producer", "/metrics", "200", 12, 80, method="GET"),
        ],
        "alert_rule_test": [
            check("70m", "WatchlogErrorBudgetBurnFast",
                  alert("WatchlogErrorBudgetBurnFast", {"service": "producer"}, "9.091%")),
            # A fast burn is also a slow one (Alertmanager inhibits the ticket while it pages),
            # but 70 minutes of data are too young for the 1d window: no ticket yet.
            check("70m", "WatchlogErrorBudgetBurnSlow"),
        ],
        "promql_expr_test": [{
            "expr": "round(service:watchlog_slo_errors:ratio_rate5m, 0.0001)", "eval_time": "70m",
            "exp_samples": [{"labels": '{service="consumer"}', "value": 0},
                            {"labels": '{service="producer"}', "value": 0.0909}]}],
    }, {
        "name": "WatchlogErrorBudgetBurnFast: 1% real 503s for 7h fire through the 6h/30m pair",
        "interval": "1m",
        "input_series": [
            tsdb_since(0, 430),
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
            tsdb_since(0, 1560),
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
    }, {
        "name": "WatchlogErrorBudgetBurnSlow: a failover's 3 errors in a young Prometheus "
                "(2 minutes of data) neither page nor open a ticket",
        "interval": "1m",
        "input_series": [
            # Prometheus started 2 minutes before the evaluation: every window holds 2 minutes.
            tsdb_since(86280, 1442),
            series(REQ % ("producer", ACT, "POST", "201", "false"), "_x1438 0 300 600 900"),
            series(REQ % ("producer", ACT, "POST", "503", "false"), "_x1438 0 3 3 3"),
        ],
        "alert_rule_test": [check("24h", "WatchlogErrorBudgetBurnSlow"),
                            check("24h", "WatchlogErrorBudgetBurnFast")],
    }, {
        "name": "WatchlogErrorBudgetBurnFast: 50% errors on 20 requests an hour are too thin "
                "to page",
        "interval": "1m",
        "input_series": [
            tsdb_since(0, 80),
            series(REQ % ("consumer", "/v1/reports/daily", "GET", "200", "false"),
                   "0+0.2x80"),
            series(REQ % ("consumer", "/v1/reports/daily", "GET", "500", "false"),
                   "0+0.2x80"),
        ],
        "alert_rule_test": [check("70m", "WatchlogErrorBudgetBurnFast")],
    }]


def latency_cases() -> list[Case]:
    return [{
        "name": "WatchlogLatencyP99High: a slow route warns after 10m; fast, export, "
                "/metrics and delay-injected routes do not",
        "interval": "1m",
        "input_series": [
            *latency("consumer", USER, 0, 100, 30),
            requests("consumer", USER, "200", 100, 30, method="GET"),
            *latency("consumer", "/v1/reports/daily", 100, 0, 30),
            requests("consumer", "/v1/reports/daily", "200", 100, 30, method="GET"),
            # A streamed export is long by nature.
            *latency("consumer", "/v1/activities/export", 0, 100, 30),
            requests("consumer", "/v1/activities/export", "200", 100, 30, method="GET"),
            # Prometheus' own scrapes of a busy consumer: not a user's request.
            *latency("consumer", "/metrics", 0, 100, 30),
            requests("consumer", "/metrics", "200", 100, 30, method="GET"),
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
            series('up{job="redis_exporter",instance="redis-exporter:9121"}', "1x12"),
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


def redis_more_cases() -> list[Case]:
    exporter = 'up{job="redis_exporter",instance="redis-exporter:9121"}'
    return [{
        "name": "RedisExporterDown: a hung exporter pages once, as itself; no RedisNodeDown "
                "while every node scrape fails with it",
        "interval": "15s",
        "input_series": [
            series(exporter, "1 0x11"),
            # The exporter is paused: every node scrape times out; no redis_up is reported.
            *(redis("up", n, "1 0x11") for n in (1, 2, 3)),
            *(redis("redis_up", n, "1 _x11") for n in (1, 2, 3)),
        ],
        "alert_rule_test": [
            check("2m", "RedisExporterDown",
                  alert("RedisExporterDown",
                        {"job": "redis_exporter", "instance": "redis-exporter:9121"})),
            check("2m", "RedisNodeDown"),
        ],
    }, {
        "name": "RedisExporterDown: an exporter that answers stays quiet; one missing from "
                "the targets pages",
        "interval": "15s",
        "input_series": [series(exporter, "1x12")],
        "alert_rule_test": [check("2m", "RedisExporterDown")],
    }, {
        "name": "RedisMemoryNearSystemLimit: no maxmemory and 85% of the machine warns; "
                "85% with a maxmemory set, or 50%, do not",
        "interval": "1m",
        "input_series": [
            redis("redis_memory_used_bytes", 1, "85x10"),
            redis("redis_total_system_memory_bytes", 1, "100x10"),
            redis("redis_memory_max_bytes", 1, "0x10"),
            redis("redis_memory_used_bytes", 2, "85x10"),
            redis("redis_total_system_memory_bytes", 2, "100x10"),
            redis("redis_memory_max_bytes", 2, "90x10"),
            redis("redis_memory_used_bytes", 3, "50x10"),
            redis("redis_total_system_memory_bytes", 3, "100x10"),
            redis("redis_memory_max_bytes", 3, "0x10"),
        ],
        "alert_rule_test": [
            check("3m", "RedisMemoryNearSystemLimit"),
            check("6m", "RedisMemoryNearSystemLimit",
                  alert("RedisMemoryNearSystemLimit", node(1), "85%")),
        ],
    }, {
        "name": "RedisMasterWithoutReplica: after a failover the promoted master runs alone",
        "interval": "15s",
        "input_series": [
            redis("redis_instance_info", 1, "1x12", role="master"),
            redis("redis_connected_slaves", 1, "1x12"),
            redis("redis_instance_info", 2, "1x12", role="master"),
            redis("redis_connected_slaves", 2, "0x12"),
        ],
        "alert_rule_test": [
            check("30s", "RedisMasterWithoutReplica"),
            check("2m", "RedisMasterWithoutReplica",
                  alert("RedisMasterWithoutReplica", node(2))),
        ],
    }, {
        "name": "RedisMasterWithoutReplica: a deployment without replicas is not degraded",
        "interval": "15s",
        "input_series": [
            *(redis("redis_instance_info", n, "1x12", role="master") for n in (1, 2, 3)),
            *(redis("redis_connected_slaves", n, "0x12") for n in (1, 2, 3)),
        ],
        "alert_rule_test": [check("2m", "RedisMasterWithoutReplica")],
    }, {
        "name": "RedisReplicationLinkDown: a replica whose link is down for 1m warns; "
                "a 30 s blip does not",
        "interval": "15s",
        "input_series": [redis("redis_master_link_up", 4, "1 0x11"),
                         redis("redis_master_link_up", 5, "1 0 0 1x9")],
        "alert_rule_test": [
            check("45s", "RedisReplicationLinkDown"),
            check("2m", "RedisReplicationLinkDown",
                  alert("RedisReplicationLinkDown", node(4))),
        ],
    }, {
        "name": "RedisReplicationLag: a replica 20 MiB behind for 2m warns; 1 MiB does not",
        "interval": "15s",
        "input_series": [
            redis("redis_master_repl_offset", 1, "0+10485760x20"),
            redis("redis_connected_slave_offset_bytes", 1, "0+10485760x20",
                  slave_ip="10.0.0.4", slave_port="6379"),
            redis("redis_master_repl_offset", 2, "20971520+1048576x20"),
            redis("redis_connected_slave_offset_bytes", 2, "0+1048576x20",
                  slave_ip="10.0.0.5", slave_port="6379"),
            redis("redis_master_repl_offset", 3, "1048576+1048576x20"),
            redis("redis_connected_slave_offset_bytes", 3, "0+1048576x20",
                  slave_ip="10.0.0.6", slave_port="6379"),
        ],
        "alert_rule_test": [
            check("1m", "RedisReplicationLag"),
            check("3m", "RedisReplicationLag",
                  alert("RedisReplicationLag",
                        {**node(2), "slave_ip": "10.0.0.5", "slave_port": "6379"}, "20Mi")),
        ],
    }, {
        "name": "RedisPersistenceFailing: a failed AOF write pages; healthy persistence "
                "does not",
        "interval": "15s",
        "input_series": [
            redis("redis_aof_last_write_status", 1, "1 0x11"),
            redis("redis_aof_last_bgrewrite_status", 1, "1x12"),
            redis("redis_aof_last_write_status", 2, "1x12"),
            redis("redis_aof_last_bgrewrite_status", 2, "1x12"),
            redis("redis_rdb_last_bgsave_status", 2, "1x12"),
        ],
        "alert_rule_test": [
            check("30s", "RedisPersistenceFailing"),
            check("2m", "RedisPersistenceFailing", alert("RedisPersistenceFailing", node(1))),
        ],
    }, {
        "name": "RedisRejectedConnections: refused connections warn; a flat counter does not",
        "interval": "1m",
        "input_series": [redis("redis_rejected_connections_total", 1, "0 0 5 5 5 5 5"),
                         redis("redis_rejected_connections_total", 2, "7x6")],
        "alert_rule_test": [
            check("1m", "RedisRejectedConnections"),
            check("3m", "RedisRejectedConnections",
                  alert("RedisRejectedConnections", node(1), "5")),
            check("6m", "RedisRejectedConnections",
                  alert("RedisRejectedConnections", node(1), "5")),
        ],
    }]


def pipeline_cases() -> list[Case]:
    age = ('watchlog_extraction_oldest_waiting_seconds'
           '{job="consumer",instance="consumer-app:5002",extractor="%s"}')
    read_ok = ('watchlog_scrape_read_ok'
               '{job="consumer",instance="consumer-app:5002",service="consumer"}')
    return [{
        "name": "WatchlogExtractionStalled: a log waiting 5 minutes warns; a follower that "
                "keeps up (its oldest 15 s) does not",
        "interval": "1m",
        "input_series": [series(age % "reports", "0+60x10"), series(age % "warehouse", "15x10")],
        "alert_rule_test": [
            check("5m", "WatchlogExtractionStalled"),
            check("7m", "WatchlogExtractionStalled",
                  alert("WatchlogExtractionStalled", {"extractor": "reports"}, "7m 0s")),
        ],
    }, {
        "name": "WatchlogExtractionStalled: one scrape without the gauge (Redis failing over) "
                "does not restart the 1m `for:`",
        "interval": "15s",
        # Older than 300 s from 5m15s on; at 6m one scrape could not read the gauge (stale).
        # Without the 1m max_over_time the alert went back to pending there and fired at
        # 7m15s; with it, it fires at 6m15s.
        "input_series": [series(age % "reports", "0+15x23 stale 375+15x10")],
        "alert_rule_test": [
            check("7m", "WatchlogExtractionStalled",
                  alert("WatchlogExtractionStalled", {"extractor": "reports"}, "7m 0s")),
        ],
    }, {
        "name": "WatchlogWritesRefusedForReplicas: a shard refusing writes for minutes pages; "
                "a replica's hiccup (14 refusals at once, then none) does not",
        "interval": "15s",
        "input_series": [
            series('watchlog_writes_refused_total{job="producer",instance="producer-app:5001",'
                   'reason="replica_timeout"}', "0+8x40"),
            series('watchlog_writes_refused_total{job="producer",instance="producer-app:5001",'
                   'reason="no_replica"}', "0 14x40"),
        ],
        "alert_rule_test": [
            check("1m", "WatchlogWritesRefusedForReplicas"),
            check("4m", "WatchlogWritesRefusedForReplicas",
                  alert("WatchlogWritesRefusedForReplicas", {"reason": "replica_timeout"},
                        "32")),
        ],
    }, {
        "name": "WatchlogScrapeReadsFailing: gauges unreadable for a minute warn; one failed "
                "scrape does not",
        "interval": "15s",
        "input_series": [series(read_ok, "1 0x11"),
                         series(read_ok.replace("consumer-app:5002", "consumer-app-2:5002"),
                                "1 0 1x10")],
        "alert_rule_test": [
            check("45s", "WatchlogScrapeReadsFailing"),
            check("2m", "WatchlogScrapeReadsFailing",
                  alert("WatchlogScrapeReadsFailing",
                        {"job": "consumer", "instance": "consumer-app:5002",
                         "service": "consumer"})),
        ],
    }, {
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
                     *redis_more_cases(), *pipeline_cases()]}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


def main() -> int:
    path = HERE / "alerts_test.yml"
    path.write_text(render())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
