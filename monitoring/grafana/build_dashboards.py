"""Write the provisioned Grafana dashboards (dashboards/*.json) from the definitions below.

Run: ``python monitoring/grafana/build_dashboards.py`` after editing, and commit the JSON with it.
tests/monitoring/test_monitoring_rules.py fails if the JSON and this file disagree.

Why generate: three dashboards, ~50 panels, and rules every panel must follow (datasource by uid,
a unit, the shared variables, a layout). Hand-edited JSON drifts from such rules; a builder
applies them once. Every PromQL expression is still written out in full here, so reviewing a
query means reading one line. Conventions for those queries:

* ``$__rate_interval`` everywhere a counter is rated: Grafana keeps it at least four scrape
  intervals (the datasource sets timeInterval 5s), so rate() always has two samples.
* Panels that can legitimately be empty (no 5xx, no rejections, no injected faults) add
  ``or <traffic> * 0``: a flat zero labelled like the real series, not "No data" — "No data" must
  keep meaning that something is broken. (tests/monitoring/test_dashboards.py holds every query to that.)
* Gauges that every consumer replica computes from the same Redis data are read with ``max``,
  counters are summed; series carry a ``pid`` label under gunicorn's multiprocess mode, so no
  query reads a raw series without aggregating.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}
RI = "$__rate_interval"
HTTP = "watchlog_http_requests_total"
FAULTS = "watchlog_faults_injected_total"

Panel = dict[str, Any]


# --- panel builders ------------------------------------------------------------------------------


def target(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> dict:
    """Return one Prometheus query of a panel."""
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "format": fmt,
    }


def panel(kind: str, title: str, unit: str, targets: list[dict], *, w: int = 12, h: int = 8,
          description: str = "", **options: Any) -> Panel:
    """Return a panel of ``kind`` with its unit and the uid-pinned datasource."""
    for ref, t in zip("ABCDEFGH", targets, strict=False):
        t["refId"] = ref
    p: Panel = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": targets,
        "options": {},
    }
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {"fillOpacity": 10, "showPoints": "never"}
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "area", "textMode": "auto"}
    p["fieldConfig"]["defaults"].update(options.pop("defaults", {}))
    p["options"].update(options)
    return p


def ts(title: str, unit: str, *targets: dict, **kw: Any) -> Panel:
    return panel("timeseries", title, unit, list(targets), **kw)


def stat(title: str, unit: str, *targets: dict, **kw: Any) -> Panel:
    kw.setdefault("w", 4)
    kw.setdefault("h", 4)
    return panel("stat", title, unit, list(targets), **kw)


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": 24, "h": 1},
            "panels": []}


def thresholds(*steps: tuple[float | None, str]) -> dict:
    return {"mode": "absolute",
            "steps": [{"value": v, "color": c} for v, c in steps]}


def mapping(values: dict[str, tuple[str, str]]) -> list[dict]:
    """Value → (text, color) mappings, e.g. 1 → UP (green)."""
    return [{"type": "value", "options": {k: {"text": t, "color": c, "index": i}
                                          for i, (k, (t, c)) in enumerate(values.items())}}]


# Every firing alert (the Watchdog heartbeat aside) as an annotation on every dashboard.
ALERT_ANNOTATIONS = {
    "name": "Alerts", "datasource": DS, "enable": True, "iconColor": "red",
    "expr": 'ALERTS{alertstate="firing", alertname!="Watchdog"}', "step": "30s",
    "titleFormat": "{{alertname}}", "textFormat": "{{severity}} {{job}} {{instance}} {{service}}",
    "useValueForTime": False,
}

# Jobs whose absence is itself an outage (compose finds the APIs by DNS: a stopped container
# has no target at all). `absent(...) - 1` is a 0 labelled with the job: DOWN, not missing.
ALWAYS_THERE = ("producer", "consumer", "redis_exporter", "prometheus")
UP_ALL = ('up{job=~"producer|consumer|simulator|extractor|redis_exporter|prometheus"}'
          + "".join(f' or (absent(up{{job="{j}"}}) - 1)' for j in ALWAYS_THERE))

UP_DOWN = {"defaults": {"mappings": mapping({"1": ("UP", "green"), "0": ("DOWN", "red")}),
                        "thresholds": thresholds((None, "red"), (1, "green"))}}


def query_var(name: str, query: str, label: str, *, all_value: str = ".+") -> dict:
    """A multi-select variable from label_values(), 'All' sending the regex ``all_value``."""
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": query, "definition": query,
        "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": all_value,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [], "hide": 0,
    }


def dashboard(uid: str, title: str, description: str, panels: list[Panel],
              variables: list[dict]) -> dict:
    """Lay ``panels`` out left to right in a 24-column grid and wrap them in a dashboard."""
    x = y = row_h = 0
    for pid, p in enumerate(panels, start=1):
        p["id"] = pid
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if p["type"] == "row" or x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"].update(x=x, y=y)
        x, row_h = x + w, max(row_h, h)
        if p["type"] == "row":
            x, y, row_h = 0, y + h, 0
    return {
        "uid": uid, "title": title, "description": description,
        "tags": ["watchlog"], "timezone": "utc", "editable": False,
        "schemaVersion": 39, "version": 1, "graphTooltip": 1,
        "time": {"from": "now-15m", "to": "now"}, "refresh": "10s",
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m"]},
        "templating": {"list": variables}, "annotations": {"list": [ALERT_ANNOTATIONS]},
        "links": [{"type": "dashboards", "tags": ["watchlog"], "asDropdown": True,
                   "title": "watchlog", "includeVars": False, "keepTime": True}],
        "panels": panels,
    }


# --- service overview ----------------------------------------------------------------------------

SVC = 'service=~"$service"'
SR = 'service=~"$service", route=~"$route"'


def _ratio_by(by: str, sel: str, num: str, den: str = 'injected="false"') -> str:
    """``num`` share of ``den`` requests by ``by``, zero when there are none of ``num``."""
    n = f"sum by ({by}) (rate({HTTP}{{{sel}, {num}}}[{RI}]))"
    d = f"sum by ({by}) (rate({HTTP}{{{sel}, {den}}}[{RI}]))" if den else \
        f"sum by ({by}) (rate({HTTP}{{{sel}}}[{RI}]))"
    return f"({n} or {d} * 0) / {d}"


def _rate_by(by: str, sel: str, metric: str = HTTP) -> str:
    return f"sum by ({by}) (rate({metric}{{{sel}}}[{RI}]))"


def _zero_filled(expr: str, by: str, sel: str = SVC) -> str:
    """``expr``, or a zero per ``by`` group of HTTP traffic where ``expr`` has no series.

    ``or on (by)``: ``expr`` may carry more labels (kind, status) than the zero series; matching
    on ``by`` alone adds a zero only for groups ``expr`` lacks, not next to its real series.
    """
    return f"{expr} or on ({by}) {_rate_by(by, sel)} * 0"


def _quantile(q: float, by: str, metric: str, sel: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[{RI}])))"


def service_overview() -> dict:
    dur = "watchlog_http_request_duration_seconds"
    real5xx = 'status=~"5..", injected="false"'
    panels = [
        row("Up (every job)"),
        stat("Targets up", "none", target(UP_ALL, "{{job}} {{instance}}"), w=16, h=5,
             defaults=UP_DOWN["defaults"],
             description="Every scrape job: UP, or DOWN when Prometheus cannot scrape it or "
                         "(APIs, exporter) has no target for it at all."),
        stat("Uptime", "s",
             target("min by (job) (time() - process_start_time_seconds"
                    '{job=~"producer|consumer|simulator|extractor|prometheus"})', "{{job}}"),
             w=4, h=5, colorMode="value", description="Since the (oldest) process started."),
        stat("Restarts (1h)", "none",
             target("sum by (job) (changes(process_start_time_seconds"
                    '{job=~"producer|consumer|simulator|extractor|prometheus"}[1h]))', "{{job}}"),
             w=4, h=5, defaults={"thresholds": thresholds((None, "green"), (1, "orange"))}),
        row("Health"),
        stat("Requests/s", "reqps", target(_rate_by("service", SVC), "{{service}}"),
             colorMode="value"),
        stat("Real error ratio (5xx, not injected, 5m)", "percentunit",
             target(f"service:watchlog_slo_errors:ratio_rate5m{{{SVC}}}", "{{service}}"),
             defaults={"thresholds": thresholds((None, "green"), (0.001, "orange"), (0.01, "red"))},
             description="What the 99.9 % SLO counts. Injected faults are excluded."),
        stat("Injected fault ratio (5m)", "percentunit",
             target(f"service:watchlog_http_injected:ratio_rate5m{{{SVC}}}", "{{service}}"),
             defaults={"thresholds": thresholds((None, "blue"))},
             description="Responses produced on purpose by fault injection: not an outage."),
        stat("SLO burn rate (1h)", "suffix:×",
             target(f"service:watchlog_slo_errors:ratio_rate1h{{{SVC}}} / 0.001", "{{service}}"),
             defaults={"thresholds": thresholds((None, "green"), (1, "orange"), (14.4, "red"))},
             description="Error-budget burn rate over 1h; 14.4× pages "
                         "(WatchlogErrorBudgetBurnFast)."),
        stat("Firing alerts", "none",
             target('count(ALERTS{alertstate="firing", alertname!="Watchdog"}) or vector(0)',
                    "firing"),
             defaults={"thresholds": thresholds((None, "green"), (1, "red"))}),
        row("Rate and errors"),
        ts("Requests by route", "reqps", target(_rate_by("service, route", SR),
                                                "{{service}} {{route}}")),
        ts("Responses by status (not injected)", "reqps",
           target(_rate_by("service, status", f'{SVC}, injected="false"'),
                  "{{service}} {{status}}")),
        ts("Real errors vs injected faults", "reqps",
           target(_zero_filled(_rate_by("service", f"{SVC}, {real5xx}"), "service"),
                  "{{service}} real 5xx"),
           target(_zero_filled(_rate_by("service", f'{SVC}, injected="true"'), "service"),
                  "{{service}} injected"),
           description="Kept on one panel, in two colours, so a chaos run never reads as an "
                       "outage."),
        ts("Real error ratio by route (5xx, not injected, 5m)", "percentunit",
           target(f"service_route:watchlog_http_errors:ratio_rate5m{{{SR}}}",
                  "{{service}} {{route}}")),
        ts("Injected faults by route and kind", "ops",
           target(_zero_filled(_rate_by("service, route, kind", SR, FAULTS), "service, route", SR),
                  "{{service}} {{route}} {{kind}}"),
           description="delay: slowed down; abort_before: failed before the write; abort_after: "
                       "failed after it was committed (the client retries; the write is "
                       "idempotent)."),
        ts("Client errors (4xx) by route", "reqps",
           target(_zero_filled(_rate_by("service, route, status", f'{SR}, status=~"4.."'),
                               "service, route", SR), "{{service}} {{route}} {{status}}")),
        row("Latency and saturation"),
        ts("Latency p50 / p95 / p99 by service", "s",
           target(_quantile(0.5, "service", dur, SVC), "{{service}} p50"),
           target(_quantile(0.95, "service", dur, SVC), "{{service}} p95"),
           target(_quantile(0.99, "service", dur, SVC), "{{service}} p99"),
           defaults={"custom": {"fillOpacity": 0, "showPoints": "never"}}),
        ts("Latency p99 by route (5m)", "s",
           target(f"service_route:watchlog_http_request_duration_seconds:p99_5m{{{SR}}}",
                  "{{service}} {{route}}"),
           description="Objective 250 ms (WatchlogLatencyP99High). Injected delays land here too."),
        panel("heatmap", "Latency distribution", "s",
              [target(f"sum by (le) (rate({dur}_bucket{{{SR}}}[{RI}]))", "{{le}}",
                      fmt="heatmap")],
              calculate=False, yAxis={"unit": "s"}, cellGap=1,
              color={"mode": "scheme", "scheme": "Oranges", "exponent": 0.5},
              rowsFrame={"layout": "auto"}),
        ts("In-flight requests", "none",
           target(f"sum by (service) (watchlog_http_requests_in_flight{{{SVC}}})", "{{service}}"),
           description="Requests being served now, all workers and threads summed."),
        ts("Redis command latency p99 by operation", "s",
           target(_quantile(0.99, "job, operation", "watchlog_redis_command_duration_seconds",
                            'job=~"$service"'), "{{job}} {{operation}}"),
           w=24, description="Time the apps spend in Redis per operation; compare with the route "
                             "p99 to tell a slow store from a slow app."),
    ]
    variables = [
        query_var("service", f"label_values({HTTP}, service)", "Service"),
        query_var("route", f'label_values({HTTP}{{service=~"$service"}}, route)', "Route",
                  all_value=".*"),
    ]
    return dashboard("watchlog-service-overview", "watchlog / Service overview",
                     "RED per service and route; real errors and injected faults apart.",
                     panels, variables)


# --- redis cluster -------------------------------------------------------------------------------

NODE = 'job="redis", instance=~"$node"'
NODE_UP = f"min by (instance) (redis_up{{{NODE}}} or up{{{NODE}}})"


# Panels whose query aggregates the nodes away (no `instance` label to fall back on).
_CLUSTER_WIDE = ("count by (role)", "max(redis_cluster_known_nodes")


def _down_not_missing(p: Panel) -> None:
    """Give every node query of ``p`` a -1 (DOWN) fallback for nodes nothing is known about.

    A killed node, or every node while the exporter hangs, has no gauges at all: without the
    fallback 17 of 19 panels went blank for it. With it, the node is listed as DOWN.
    """
    changed = False
    for t in p.get("targets", []):
        expr = t["expr"]
        if 'job="redis"' not in expr or "== 0) - 1" in expr or expr == NODE_UP:
            continue
        if expr.startswith(_CLUSTER_WIDE):
            t["expr"] = f"{expr} or on () (max({NODE_UP}) == 0) - 1"
        else:
            t["expr"] = f"{expr} or on (instance) ({NODE_UP} == 0) - 1"
        changed = True
    if changed:
        defaults = p["fieldConfig"]["defaults"]
        maps = defaults.setdefault("mappings", [])
        if not any("-1" in m.get("options", {}) for m in maps):
            maps.extend(mapping({"-1": ("DOWN", "red")}))


def _or_down(expr: str) -> str:
    """``expr`` per node, or -1 (mapped to DOWN) for a node that is down: never missing."""
    return f"{expr} or on (instance) ({NODE_UP} == 0) - 1"


def redis_cluster() -> dict:
    cmds = "redis_commands_processed_total"
    panels = [
        row("Cluster"),
        stat("Exporter up", "none",
             target('up{job="redis_exporter"} or (absent(up{job="redis_exporter"}) - 1)',
                    "redis_exporter"), w=4, defaults=UP_DOWN["defaults"],
             description="Every node below is read through the exporter: when it is DOWN, so "
                         "is every node's scrape (RedisExporterDown, not RedisNodeDown)."),
        stat("Node up", "none", target(NODE_UP, "{{instance}}"), w=8,
             defaults=UP_DOWN["defaults"],
             description="redis_up, or the node's scrape when a hung node times it out."),
        stat("Cluster state", "none",
             target(_or_down(f"redis_cluster_state{{{NODE}}}"), "{{instance}}"),
             w=4, defaults={"mappings": mapping({"1": ("ok", "green"), "0": ("fail", "red"),
                                                 "-1": ("DOWN", "red")}),
                            "thresholds": thresholds((None, "red"), (1, "green"))}),
        stat("Slots ok / pfail / fail", "none",
             target(_or_down(f"redis_cluster_slots_ok{{{NODE}}}"), "{{instance}} ok"),
             target(_or_down(f"redis_cluster_slots_pfail{{{NODE}}}"), "{{instance}} pfail"),
             target(_or_down(f"redis_cluster_slots_fail{{{NODE}}}"), "{{instance}} fail"),
             w=8, defaults={"mappings": mapping({"-1": ("DOWN", "red")}),
                            "thresholds": thresholds((None, "red"), (0, "green"))}),
        stat("Slots assigned", "none",
             target(_or_down(f"redis_cluster_slots_assigned{{{NODE}}}"), "{{instance}}"), w=6,
             defaults={"mappings": mapping({"-1": ("DOWN", "red")}),
                       "thresholds": thresholds((None, "red"), (16384, "green"))}),
        stat("Persistence (AOF write, AOF rewrite, RDB save)", "none",
             target(_or_down(f"min by (instance) (redis_aof_last_write_status{{{NODE}}})"),
                    "{{instance}} aof"),
             target(_or_down(f"min by (instance) (redis_aof_last_bgrewrite_status{{{NODE}}})"),
                    "{{instance}} rewrite"),
             target(_or_down(f"min by (instance) (redis_rdb_last_bgsave_status{{{NODE}}})"),
                    "{{instance}} rdb"),
             w=18, defaults={"mappings": mapping({"1": ("ok", "green"), "0": ("err", "red"),
                                                  "-1": ("DOWN", "red")}),
                             "thresholds": thresholds((None, "red"), (1, "green"))},
             description="RedisPersistenceFailing pages on an error."),
        panel("table", "Node roles", "none",
              [target(f"max by (instance, role, redis_version) (redis_instance_info{{{NODE}}})",
                      instant=True, fmt="table")],
              w=12, h=6, description="role from INFO replication: master or slave (replica).",
              ) | {"transformations": [{"id": "organize", "options": {
                  "excludeByName": {"Time": True, "Value": True}}}]},
        stat("Nodes by role", "none",
             target(f"count by (role) (redis_instance_info{{{NODE}}})", "{{role}}"), w=6, h=6,
             colorMode="value"),
        stat("Known cluster nodes", "none",
             target(f"max(redis_cluster_known_nodes{{{NODE}}})", "known nodes"), w=6, h=6,
             colorMode="value",
             description="Nodes the cluster knows, seen from any node; a node that stopped "
                         "still counts here while its redis_up reads 0."),
        row("Replication"),
        stat("Replication link (replicas) / role", "none",
             target(_or_down(f"max by (instance) (redis_master_link_up{{{NODE}}}) or max by "
                             f'(instance) (redis_instance_info{{{NODE}, role="master"}}) * 0 + 2'),
                    "{{instance}}"), w=8,
             defaults={"mappings": mapping({"1": ("link up", "green"), "0": ("link DOWN", "red"),
                                            "2": ("master", "blue"), "-1": ("DOWN", "red")}),
                       "thresholds": thresholds((None, "red"), (1, "green"))},
             description="A replica's link to its master (RedisReplicationLinkDown); masters "
                         "show as such."),
        stat("Replicas per master", "none",
             target(f"max by (instance) (redis_connected_slaves{{{NODE}}}) and on (instance) "
                    f'redis_instance_info{{{NODE}, role="master"}}', "{{instance}}"), w=8,
             defaults={"thresholds": thresholds((None, "orange"), (1, "green"))},
             description="RedisMasterWithoutReplica warns on 0 where the deployment has "
                         "replicas."),
        ts("Replication lag (bytes)", "bytes",
           target(f"max by (instance, slave_ip, slave_port) (redis_master_repl_offset{{{NODE}}} "
                  f"- on (instance) group_right redis_connected_slave_offset_bytes{{{NODE}}}) "
                  f"or max by (instance) (redis_master_repl_offset{{{NODE}}}) * 0",
                  "{{instance}} → {{slave_ip}}:{{slave_port}}"), w=8,
           description="Master offset minus each replica's; masters without replicas read 0."),
        row("Load"),
        ts("Commands/s per node", "ops",
           target(f"sum by (instance) (rate({cmds}{{{NODE}}}[{RI}]))", "{{instance}}"),
           description="Partitions hash to evenly spread slots: the masters' lines should "
                       "track each other."),
        ts("Share of commands per node", "percentunit",
           target(f"sum by (instance) (rate({cmds}{{{NODE}}}[{RI}])) / ignoring (instance) "
                  f"group_left sum(rate({cmds}{{{NODE}}}[{RI}]))", "{{instance}}")),
        ts("Command latency by command (mean)", "s",
           target(f"topk(8, sum by (cmd) (rate(redis_commands_duration_seconds_total{{{NODE}}}"
                  f"[{RI}])) / sum by (cmd) (rate(redis_commands_total{{{NODE}}}[{RI}])) > 0)",
                  "{{cmd}}"),
           description="Server-side time per call (evalsha is the ingest script)."),
        ts("Network I/O per node", "Bps",
           target(f"sum by (instance) (rate(redis_net_input_bytes_total{{{NODE}}}[{RI}]))",
                  "{{instance}} in"),
           target(f"sum by (instance) (rate(redis_net_output_bytes_total{{{NODE}}}[{RI}]))",
                  "{{instance}} out")),
        row("Memory, keys, clients"),
        ts("Memory used vs maxmemory", "bytes",
           target(f"redis_memory_used_bytes{{{NODE}}}", "{{instance}} used"),
           target(f"redis_memory_max_bytes{{{NODE}}}", "{{instance}} maxmemory (0 = unlimited)"),
           description="RedisMemoryNearMax warns at 90 % of maxmemory."),
        ts("Keys per node", "none",
           target(f"sum by (instance) (redis_db_keys{{{NODE}}})", "{{instance}}")),
        ts("Clients (connected / blocked / rejected/s)", "none",
           target(f"redis_connected_clients{{{NODE}}}", "{{instance}} connected"),
           target(f"redis_blocked_clients{{{NODE}}}", "{{instance}} blocked"),
           target(f"rate(redis_rejected_connections_total{{{NODE}}}[{RI}])",
                  "{{instance}} rejected/s"),
           description="RedisRejectedConnections warns on any rejection (maxclients)."),
        ts("Keyspace hit ratio", "percentunit",
           target(f"sum by (instance) (rate(redis_keyspace_hits_total{{{NODE}}}[{RI}])) / "
                  f"(sum by (instance) (rate(redis_keyspace_hits_total{{{NODE}}}[{RI}])) + "
                  f"sum by (instance) (rate(redis_keyspace_misses_total{{{NODE}}}[{RI}])) > 0)"
                  f" or max by (instance) (redis_up{{{NODE}}}) * 0", "{{instance}}"),
           description="Reads that found their key; 0 where nothing was read."),
        ts("Memory used / system", "percentunit",
           target(f"redis_memory_used_bytes{{{NODE}}} / redis_total_system_memory_bytes"
                  f"{{{NODE}}}", "{{instance}}"),
           description="RedisMemoryNearSystemLimit warns at 80 % on nodes without maxmemory."),
        ts("Expired and evicted keys/s", "ops",
           target(f"sum by (instance) (rate(redis_expired_keys_total{{{NODE}}}[{RI}]))",
                  "{{instance}} expired"),
           target(f"sum by (instance) (rate(redis_evicted_keys_total{{{NODE}}}[{RI}]))",
                  "{{instance}} evicted"),
           description="Expiry is retention at work (EXPIREAT on day keys); evictions must "
                       "stay 0."),
        ts("Exporter scrape duration", "s",
           target(f"redis_exporter_last_scrape_duration_seconds{{{NODE}}}", "{{instance}}"),
           w=24),
    ]
    for p in panels:
        _down_not_missing(p)
    variables = [query_var("node", 'label_values(redis_up{job="redis"}, instance)', "Node")]
    return dashboard("watchlog-redis-cluster", "watchlog / Redis cluster",
                     "Per node: up, load, memory, keys, clients, cluster state, slots and role.",
                     panels, variables)


# --- activity ------------------------------------------------------------------------------------

AT = 'activity_type=~"$activity_type"'
ING = "watchlog_logs_ingested_total"
EXT_UP = 'sum(up{job="extractor"})'
# The consumer reads these gauges from Redis at scrape time; when that read fails they are
# absent. `or` -1, mapped to "unreadable": the panel says the figure is unknown, not "No data".
UNREADABLE = " or on () (max(watchlog_scrape_read_ok) == 0) - 1"
UNREADABLE_MAP = {"mappings": mapping({"-1": ("unreadable (Redis)", "red")})}
SIM_UP = 'sum(up{job="simulator"})'


def activity() -> dict:
    created = f"sum by (activity_type) (rate({ING}{{{AT}, result=\"created\"}}[{RI}]))"
    dupes = f"sum by (activity_type) (rate({ING}{{{AT}, result=\"duplicate\"}}[{RI}]))"
    sim = "watchlog_simulator_{}_total"
    ext = "watchlog_extractor_{}_total"
    panels = [
        row("Fleet today (UTC)"),
        stat("Active users today", "none",
             target("max(watchlog_fleet_active_users)" + UNREADABLE, "users"),
             w=6, colorMode="value", defaults=UNREADABLE_MAP),
        stat("Logs today", "none",
             target(f"sum(max by (activity_type) (watchlog_fleet_logs_today{{{AT}}}))"
                    + UNREADABLE, "logs"), w=6, colorMode="value", defaults=UNREADABLE_MAP),
        stat("Ingested logs/s", "cps", target(f"sum({created})", "created"), w=6,
             colorMode="value"),
        stat("Duplicate share", "percentunit",
             target(f"sum({dupes} or {created} * 0) / sum(rate({ING}{{{AT}}}[{RI}]))",
                    "duplicates"), w=6,
             description="Retries and replays the idempotent write recognised and skipped."),
        ts("Logs today by activity type", "none",
           target(f"max by (activity_type) (watchlog_fleet_logs_today{{{AT}}})" + UNREADABLE,
                  "{{activity_type}}"), defaults=UNREADABLE_MAP),
        row("Ingest"),
        ts("Logs ingested/s by activity type", "cps", target(created, "{{activity_type}}")),
        ts("Duplicates/s by activity type", "cps",
           target(f"{dupes} or {created} * 0", "{{activity_type}}")),
        ts("Rejected logs/s by reason", "cps",
           target("sum by (reason) (rate(watchlog_logs_rejected_total[$__rate_interval])) "
                  "or vector(0)", "{{reason}}"),
           description="invalid, too_large, malformed, unsupported_media_type, forbidden. "
                       "A flat unlabelled 0 means no rejections."),
        ts("Writes refused for want of replicas/s", "reqps",
           target("sum by (reason) (rate(watchlog_writes_refused_total[$__rate_interval])) "
                  "or vector(0)", "{{reason}}"),
           description="503s because fewer replicas confirmed a write than "
                       "WATCHLOG_WAIT_REPLICAS asks (replica_timeout), or a master refused it "
                       "with no replica in sync (no_replica): durable, not acknowledged "
                       "(docs/chaos.md). A flat unlabelled 0 means none."),
        ts("Batch size (events per request)", "none",
           # Sizes are whole numbers: the quantile interpolated inside a bucket is rounded up
           # (all batches of 1 read p50 1, not the 0.5 of the (0, 1] bucket's midpoint).
           target("ceil(histogram_quantile(0.5, sum by (le) (rate(watchlog_batch_size_bucket"
                  f"[{RI}]))))", "p50"),
           target("ceil(histogram_quantile(0.95, sum by (le) (rate(watchlog_batch_size_bucket"
                  f"[{RI}]))))", "p95"),
           target(f"sum(rate(watchlog_batch_size_sum[{RI}])) / sum(rate(watchlog_batch_size_count"
                  f"[{RI}]))", "mean")),
        ts("Redis ingest latency p99", "s",
           target(_quantile(0.99, "job", "watchlog_redis_command_duration_seconds",
                            'operation="ingest"'), "{{job}} ingest"), w=24),
        row("Extraction"),
        stat("Extractor and simulator up", "none",
             target('up{job=~"extractor|simulator"}', "{{job}}"), w=8,
             defaults=UP_DOWN["defaults"]),
        ts("Oldest waiting log per extractor", "s",
           target("max by (extractor) (watchlog_extraction_oldest_waiting_seconds)"
                  + UNREADABLE, "{{extractor}}"), w=16, defaults=UNREADABLE_MAP,
           description="Age of the oldest log not yet acknowledged; WatchlogExtractionStalled "
                       "at 5 minutes."),
        ts("Extraction lag (not yet delivered)", "none",
           target("max by (extractor) (watchlog_extraction_lag)" + UNREADABLE, "{{extractor}}"),
           defaults=UNREADABLE_MAP,
           description="WatchlogExtractionLagGrowing: above 1000 and still growing for 10m."),
        ts("Extraction pending (delivered, not acknowledged)", "none",
           target("max by (extractor) (watchlog_extraction_pending)" + UNREADABLE,
                  "{{extractor}}"), defaults=UNREADABLE_MAP),
        ts("Redelivered entries/s", "cps",
           target(f"sum(rate(watchlog_extraction_redelivered_total[{RI}]))", "redelivered"),
           description="Batches not acknowledged within WATCHLOG_EXTRACT_VISIBILITY_S."),
        ts("Extractor client", "cps",
           # `or … * 0`: a stopped extractor reads 0/s (its `up` is 0), not "No data".
           *(target(f"sum(rate({ext.format(k)}[{RI}])) or {EXT_UP} * 0", legend)
             for k, legend in (("written", "written logs/s"), ("batches", "batches/s"),
                               ("errors", "errors/s")))),
        row("Simulator (the watches)"),
        ts("Simulator sent / acknowledged / failed", "cps",
           *(target(f"sum(rate({sim.format(k)}[{RI}])) or {SIM_UP} * 0", k) for k in
             ("sent", "acknowledged", "failed")),
           description="WatchlogSimulatorFailing: failed > 5 % of sent, or nothing acknowledged."),
        ts("Simulator retries and duplicates", "cps",
           *(target(f"sum(rate({sim.format(k)}[{RI}])) or {SIM_UP} * 0", k)
             for k in ("retried", "duplicate")),
           description="A retry after an abort_after fault comes back as a duplicate: "
                       "the write was committed the first time."),
    ]
    variables = [query_var("activity_type", f"label_values({ING}, activity_type)",
                           "Activity type", all_value=".*")]
    return dashboard("watchlog-activity", "watchlog / Activity",
                     "What the watches send: logs per activity type, users, duplicates, "
                     "rejections, batches, extraction and the simulators.",
                     panels, variables)


DASHBOARDS = {
    "service-overview.json": service_overview,
    "redis-cluster.json": redis_cluster,
    "activity.json": activity,
}


def render() -> dict[str, str]:
    """Return each dashboard file's name and its JSON text."""
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
            for name, build in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
