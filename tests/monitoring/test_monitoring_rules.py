"""Offline checks of the monitoring files: Prometheus configs, rules, alert tests, dashboards.

promtool is required, not optional: a CI without it would silently stop checking the alerts,
so its absence fails the suite with the command that installs it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dashboards import iter_panels, panel_queries, variable_queries

from helpers import require_tool
from watchlog.launcher.monitoring import (
    compose_prometheus_config,
    monitoring_root,
    render_native_prometheus,
)

ROOT = monitoring_root()
PROM = ROOT / "prometheus"
RULES = PROM / "rules"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
ALL_JOBS = {"prometheus", "producer", "consumer", "simulator", "extractor", "redis",
            "redis_exporter"}


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


def run(*args: str | Path) -> str:
    """Run a checker; fail the test with its output unless it exits 0."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{output}"
    return output


def native_config(**overrides: Any) -> str:
    kwargs: dict[str, Any] = dict(
        producer="127.0.0.1:5001", consumer="127.0.0.1:5002", simulator="127.0.0.1:9101",
        extractor="127.0.0.1:9102", exporter="127.0.0.1:9121",
        redis_nodes=["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"], rules_dir=RULES,
        prometheus="127.0.0.1:9090",
    )
    kwargs.update(overrides)
    return render_native_prometheus(**kwargs)


def jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


# --- Prometheus config ---------------------------------------------------------------------------


def test_compose_config_is_valid(promtool: str, tmp_path: Path) -> None:
    run(promtool, "check", "config", PROM / "prometheus.yml")
    # /etc/prometheus/rules exists only in the container: check once more with the rules the
    # container mounts there, so the rule files are loaded through the config as well.
    config = compose_prometheus_config()
    config["rule_files"] = [str(RULES / "*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    out = run(promtool, "check", "config", path)
    assert f"SUCCESS: {len(list(RULES.glob('*.yml')))} rule files found" in out, out


def test_native_config_is_valid(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "prometheus.yml"
    path.write_text(native_config(alertmanager="127.0.0.1:9093"))
    out = run(promtool, "check", "config", path)
    assert f"SUCCESS: {len(list(RULES.glob('*.yml')))} rule files found" in out, out


def test_native_config_matches_compose_except_addresses() -> None:
    compose = compose_prometheus_config()
    native = yaml.safe_load(native_config(alertmanager="127.0.0.1:9093"))
    assert set(jobs(compose)) == set(jobs(native)) == ALL_JOBS
    assert native["global"] == compose["global"]
    assert [Path(p).name for p in native["rule_files"]] == \
        [Path(p).name for p in compose["rule_files"]]
    assert Path(native["rule_files"][0]).parent == RULES.resolve()
    for name, job in jobs(compose).items():
        other = jobs(native)[name]
        ignored = {"static_configs", "dns_sd_configs", "relabel_configs"}
        assert {k: v for k, v in job.items() if k not in ignored} == \
            {k: v for k, v in other.items() if k not in ignored}, name
        # Relabelling is identical except where the exporter's address is written.
        for mine, theirs in zip(job.get("relabel_configs", []), other.get("relabel_configs", []),
                                strict=True):
            if theirs.get("replacement") != "127.0.0.1:9121":
                assert mine == theirs, name


def test_native_config_targets_loopback_addresses() -> None:
    native = jobs(yaml.safe_load(native_config()))
    assert native["producer"]["static_configs"] == [{"targets": ["127.0.0.1:5001"]}]
    assert native["redis"]["static_configs"] == [
        {"targets": ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]}]
    assert "dns_sd_configs" not in native["redis"]
    assert native["redis"]["relabel_configs"][-1] == {"target_label": "__address__",
                                                     "replacement": "127.0.0.1:9121"}
    assert native["redis_exporter"]["static_configs"] == [{"targets": ["127.0.0.1:9121"]}]


def test_native_config_leaves_out_clients_and_alertmanager_that_do_not_run() -> None:
    native = yaml.safe_load(native_config(simulator=None, extractor=None))
    assert set(jobs(native)) == ALL_JOBS - {"simulator", "extractor"}
    assert "alerting" not in native


def test_compose_redis_job_sends_every_node_to_the_exporter() -> None:
    redis = jobs(compose_prometheus_config())["redis"]
    assert redis["metrics_path"] == "/scrape"
    assert redis["static_configs"] == [
        {"targets": [f"redis-node-{i}:6379" for i in (1, 2, 3)]}]
    # The replicas and scale profiles' nodes are discovered, never statically expected.
    assert redis["dns_sd_configs"][0]["names"] == [f"redis-node-{i}" for i in (4, 5, 6, 7, 8)]
    assert redis["relabel_configs"][-1]["replacement"] == "redis-exporter:9121"


# --- rules ---------------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((RULES / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_rules_are_valid(promtool: str) -> None:
    run(promtool, "check", "rules", *sorted(RULES.glob("*.yml")))


def rule_test_failures(promtool: str, tests: list[Path], tmp_path: Path) -> list[str]:
    """Run promtool's unit tests of the rules; return the failures' output.

    promtool runs a file's tests one after another (~28 s for ours), so they are dealt into
    one file per core and run side by side."""
    parts: list[Path] = []
    cores = max(2, os.cpu_count() or 2)
    for path in tests:
        doc = yaml.safe_load(path.read_text())
        doc["rule_files"] = [str((path.parent / f).resolve()) for f in doc["rule_files"]]
        for k in range(min(cores, len(doc["tests"]))):
            part = tmp_path / f"{path.stem}-{k}.yml"
            part.write_text(yaml.safe_dump({**doc, "tests": doc["tests"][k::cores]}))
            parts.append(part)
    assert sum(len(yaml.safe_load(p.read_text())["tests"]) for p in parts) == sum(
        len(yaml.safe_load(t.read_text())["tests"]) for t in tests)
    procs = [subprocess.Popen([promtool, "test", "rules", str(p)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for p in parts]
    failed = []
    for p, proc in zip(parts, procs, strict=True):
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            failed.append(f"{p.name}:\n{out}")
    return failed


def test_rule_unit_tests_pass(promtool: str, tmp_path: Path) -> None:
    tests = sorted((PROM / "tests").glob("*.yml"))
    assert tests
    failed = rule_test_failures(promtool, tests, tmp_path)
    assert not failed, "\n".join(failed)


def test_rule_unit_test_runner_reports_a_failing_case(promtool: str, tmp_path: Path) -> None:
    """Negative control of the split run: a case expecting an alert that cannot fire (no
    series at all) is reported, whichever part it was dealt into."""
    doc = yaml.safe_load((PROM / "tests" / "alerts_test.yml").read_text())
    wrong = {"name": "expects a page from nothing", "interval": "1m", "input_series": [],
             "alert_rule_test": [{"eval_time": "5m", "alertname": "WatchlogServiceDown",
                                  "exp_alerts": [{"exp_labels": {"service": "producer"}}]}]}
    (tmp_path / "src").mkdir()
    broken = tmp_path / "src" / "broken_test.yml"
    broken.write_text(yaml.safe_dump({**doc, "tests": [*doc["tests"][:3], wrong],
                                      "rule_files": [str((PROM / "tests" / f).resolve())
                                                     for f in doc["rule_files"]]}))
    failed = rule_test_failures(promtool, [broken], tmp_path)
    assert len(failed) == 1 and "expects a page from nothing" in failed[0], failed


def test_alert_unit_tests_are_what_the_builder_writes() -> None:
    rendered = load_builder(PROM / "tests" / "build_alert_tests.py").render()
    assert (PROM / "tests" / "alerts_test.yml").read_text() == rendered, (
        "alerts_test.yml is stale: run python monitoring/prometheus/tests/build_alert_tests.py")


ALERTS = {
    "WatchlogServiceDown", "WatchlogClientDown", "PrometheusNotificationsFailing", "Watchdog",
    "WatchlogErrorBudgetBurnFast", "WatchlogErrorBudgetBurnSlow", "WatchlogLatencyP99High",
    "RedisExporterDown", "RedisNodeDown", "RedisClusterStateNotOk", "RedisMemoryNearMax",
    "RedisMemoryNearSystemLimit", "RedisMasterWithoutReplica", "RedisReplicationLinkDown",
    "RedisReplicationLag", "RedisPersistenceFailing", "RedisRejectedConnections",
    "WatchlogExtractionLagGrowing", "WatchlogExtractionStalled", "WatchlogScrapeReadsFailing",
    "WatchlogSimulatorFailing", "WatchlogWritesRefusedForReplicas",
}
# The dead man's switch fires always: it has no silent case by design.
ALWAYS_FIRING = {"Watchdog"}


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in (PROM / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names == ALERTS
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent - ALWAYS_FIRING == set(), "alerts never tested silent"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    expected = {"none"} if rule["alert"] in ALWAYS_FIRING else {"critical", "warning"}
    assert rule["labels"]["severity"] in expected
    for key in ("summary", "description", "runbook", "runbook_url", "dashboard_url"):
        assert rule["annotations"].get(key), f"{rule['alert']} lacks {key}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (lower case, spaces to dashes)."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add("".join(c for c in text.replace(" ", "-") if c.isalnum() or c in "-_"))
    return out


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_links_to_its_runbook_section_and_a_dashboard(rule: dict[str, Any]) -> None:
    runbook = ROOT.parent / "docs" / "runbook.md"
    path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
    assert path == "docs/runbook.md" and anchor == rule["alert"].lower()
    assert anchor in _anchors(runbook.read_text()), f"docs/runbook.md has no section {anchor}"
    section = runbook.read_text().split(f"## {rule['alert']}\n", 1)[1].split("\n## ", 1)[0]
    for part in ("**Means**", "**Confirm**", "**Do**"):
        assert part in section, f"runbook section {rule['alert']} lacks {part}"
    uid = rule["annotations"]["dashboard_url"].rsplit("/d/", 1)[1].split("?")[0]
    assert uid in {json.loads(p.read_text())["uid"] for p in DASHBOARDS}


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool cannot read dashboards, but it parses any expression given as a recording rule.
    rules = [{"record": f"dashboard:query_{i}:check", "expr": expr}
             for i, (_, expr) in enumerate(q for d in DASHBOARDS
                                           for q in panel_queries(json.loads(d.read_text())))]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    run(promtool, "check", "rules", path)


# --- dashboards ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_follows_the_conventions(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"].startswith("watchlog / ")
    assert dashboard["time"] == {"from": "now-15m", "to": "now"}
    assert dashboard["refresh"] == "10s"
    panels = list(iter_panels(dashboard))
    assert panels
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, title
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        assert panel["targets"], f"{title}: no query"
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "prometheus", title
            assert t["expr"].strip(), title
    for var in dashboard["templating"]["list"]:
        assert var["datasource"]["uid"] == "prometheus"


def test_dashboards_have_their_variables() -> None:
    names = {p.name: {v["name"] for v in json.loads(p.read_text())["templating"]["list"]}
             for p in DASHBOARDS}
    assert {"service-overview.json", "redis-cluster.json", "activity.json"} <= set(names)
    assert "service" in names["service-overview.json"]
    assert "node" in names["redis-cluster.json"]
    node = json.loads((ROOT / "grafana/dashboards/redis-cluster.json").read_text())
    assert dict(variable_queries(node)) == {"node": 'redis_up{job="redis"}'}


def test_dashboard_uids_are_unique() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def load_builder(path: Path) -> Any:
    """Import one of the monitoring/ generator scripts (they are not in a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_json_is_what_the_builder_writes() -> None:
    rendered = load_builder(ROOT / "grafana" / "build_dashboards.py").render()
    assert sorted(rendered) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], (
            f"{path.name} is stale: run python monitoring/grafana/build_dashboards.py")


# --- Grafana provisioning and Alertmanager -------------------------------------------------------


def test_grafana_datasource_is_pinned_by_uid_and_url_from_environment() -> None:
    doc = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = doc["datasources"]
    assert source["uid"] == "prometheus" and source["type"] == "prometheus"
    assert source["url"] == "${WATCHLOG_PROMETHEUS_URL}"


def test_grafana_dashboard_provider_reads_the_mounted_directory() -> None:
    doc = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/dashboards.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_alertmanager_config_routes_to_defined_receivers() -> None:
    path = ROOT / "alertmanager" / "alertmanager.yml"
    doc = yaml.safe_load(path.read_text())
    receivers = {r["name"] for r in doc["receivers"]}
    routes = [doc["route"], *doc["route"].get("routes", [])]
    assert {r["receiver"] for r in routes} <= receivers
    alerts = {rule["alert"] for rule in alert_rules()}
    for rule in doc.get("inhibit_rules", []):
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            label, op, value = re.match(r'(\w+)(=~|=)"(.*)"$', matcher).groups()  # type: ignore[union-attr]
            if label != "alertname":
                continue
            named = {a for a in alerts if re.fullmatch(value, a)} if op == "=~" else \
                {value} & alerts
            assert named, f"{matcher} names no alert"
            if op == "=~":  # every alternative names a real alert, not a typo matching nothing
                for alt in value.split("|"):
                    bare = alt.replace("(", "").replace(")", "")
                    assert any(bare in a for a in named), f"{matcher}: {alt}"
    # amtool comes with the Debian prometheus-alertmanager package (a tool of `make test`).
    run(require_tool("amtool"), "check-config", path)


def test_compose_file_wires_grafana_to_the_provisioning() -> None:
    compose_path = ROOT.parent / "docker-compose.yml"
    services = yaml.safe_load(compose_path.read_text()).get("services", {})
    assert "grafana" in services
    grafana = services["grafana"]
    env = grafana.get("environment", {})
    env_names = set(env) if isinstance(env, dict) else {e.split("=", 1)[0] for e in env}
    assert "WATCHLOG_PROMETHEUS_URL" in env_names
    mounts = " ".join(str(v) for v in grafana.get("volumes", []))
    assert "/var/lib/grafana/dashboards" in mounts


# --- alerting and Prometheus flags, compose and native --------------------------------------------


def _compose_services() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT.parent / "docker-compose.yml").read_text())["services"])


def test_compose_alertmanager_delivers_to_the_alert_sink_by_default() -> None:
    services = _compose_services()
    assert "profiles" not in services["alertmanager"], "Alertmanager must run by default"
    mounts = " ".join(services["alertmanager"]["volumes"])
    assert "./monitoring/alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml" in mounts
    doc = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    (receiver,) = [r for r in doc["receivers"] if r["name"] == doc["route"]["receiver"]]
    url = receiver["webhook_configs"][0]["url"]
    assert receiver["webhook_configs"][0]["send_resolved"] is True
    assert url == "http://alert-sink:9095/webhook"
    sink = services["alert-sink"]
    assert sink["command"][:2] == ["watchlog", "alert-sink"]
    assert "0.0.0.0:9095" in sink["command"] and "9095" in sink["expose"]
    from watchlog.cli.alerts import alert_sink

    options = {o for p in alert_sink.params for o in p.opts}
    assert {a for a in sink["command"][2:] if a.startswith("-")} <= options
    assert sink["healthcheck"]["test"] == ["CMD", "watchlog", "healthcheck",
                                           "http://127.0.0.1:9095/-/ready"]
    prometheus = compose_prometheus_config()
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == \
        ["alertmanager:9093"]


def test_compose_exporter_has_a_password_for_every_node_and_no_other_target() -> None:
    """The password map covers each target the redis job can produce; no global password."""
    services = _compose_services()
    exporter = services["redis-exporter"]
    assert "REDIS_PASSWORD" not in (exporter.get("environment") or {})
    assert not [a for a in exporter["command"] if a.startswith("--redis.password=")]
    assert "--redis.password-file=/etc/redis-exporter/passwords.json" in exporter["command"]
    content = yaml.safe_load((ROOT.parent / "docker-compose.yml").read_text())[
        "configs"]["exporter-passwords"]["content"]
    keys = set(re.findall(r'"(redis://[^"]+)"', content))
    assert keys == {f"redis://redis-node-{i}:6379" for i in range(1, 9)}


def test_prometheus_keeps_the_slo_window_and_offers_no_lifecycle_api(tmp_path: Path) -> None:
    """30 days kept (the SLO's window); no --web.enable-lifecycle (POST /-/quit), both modes."""
    from watchlog.launcher.observability import prometheus_service
    from watchlog.launcher.services import Ports

    command = " ".join(_compose_services()["prometheus"]["command"])
    assert "--web.enable-lifecycle" not in command
    assert "--storage.tsdb.retention.time=${PROMETHEUS_RETENTION:-30d}" in command
    native = prometheus_service(tmp_path, "127.0.0.1", Ports(), ["127.0.0.1:7000"], set())
    if isinstance(native, str):
        pytest.fail(native)
    assert "--web.enable-lifecycle" not in native.argv
    assert "--storage.tsdb.retention.time=30d" in native.argv
    rendered = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
    assert rendered["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == \
        ["127.0.0.1:9093"]


def test_native_alertmanager_config_is_valid_and_authenticates_to_the_sink(tmp_path: Path) -> None:
    from watchlog.launcher.monitoring import render_native_alertmanager

    token = tmp_path / "sink.token"
    token.write_text("x")
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_native_alertmanager(sink_url="http://127.0.0.1:9095/webhook",
                                               token_file=token))
    hook = yaml.safe_load(path.read_text())["receivers"][0]["webhook_configs"][0]
    assert hook["url"] == "http://127.0.0.1:9095/webhook"
    assert hook["http_config"]["authorization"]["credentials_file"] == str(token)
    amtool = shutil.which("amtool")
    assert amtool, "amtool not found: apt-get install prometheus-alertmanager"
    run(amtool, "check-config", path)


def test_every_recording_rule_is_read_by_an_alert_a_dashboard_or_a_test() -> None:
    """A recorded series nothing reads costs evaluations and storage for nothing."""
    recorded = [rule["record"] for group in yaml.safe_load(
        (RULES / "recording.yml").read_text())["groups"] for rule in group["rules"]]
    readers = (RULES / "alerts.yml").read_text() + "".join(
        d.read_text() for d in DASHBOARDS)
    unused = [r for r in recorded if r not in readers]
    assert not unused, f"recording rules nothing reads: {unused}"


def test_extractor_inhibition_names_the_extractor_the_process_runs(tmp_path: Path) -> None:
    """A stopped extractor process mutes only its own extractor's backlog alerts.

    The scrape job carries ``extractor`` = the built-in extractor's name, natively and in
    compose, and the inhibition requires it equal; the inhibition as it was (no ``equal``,
    muting every extractor's alerts while the process is down) fails this check.
    """
    from watchlog.launcher.monitoring import render_native_prometheus
    from watchlog.launcher.services import BUILTIN_EXTRACTOR

    compose = yaml.safe_load((PROM / "prometheus.yml").read_text())
    native = yaml.safe_load(render_native_prometheus(
        producer="127.0.0.1:1", consumer="127.0.0.1:2", simulator=None,
        extractor="127.0.0.1:3", exporter="127.0.0.1:4", redis_nodes=["127.0.0.1:5"],
        rules_dir=tmp_path, prometheus="127.0.0.1:6", alertmanager=None))
    for config in (compose, native):
        job = next(j for j in config["scrape_configs"] if j["job_name"] == "extractor")
        assert [c["labels"] for c in job["static_configs"]] == [{"extractor": BUILTIN_EXTRACTOR}]
    am = yaml.safe_load((PROM.parent / "alertmanager" / "alertmanager.yml").read_text())
    rules = [r for r in am["inhibit_rules"] if 'job="extractor"' in r["source_matchers"]]
    assert len(rules) == 1 and rules[0]["equal"] == ["extractor"]
