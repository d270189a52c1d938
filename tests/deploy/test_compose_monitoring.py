"""Prometheus, Grafana and Alertmanager against the compose file.

Every address Prometheus scrapes or alerts to (Alertmanager included) is a compose service and
a port it listens on; Prometheus and Grafana mount the files of monitoring/ themselves, never a
copy; every Grafana dashboard is provisioned and the datasource points at Prometheus; promtool
(Debian's `prometheus`) checks the compose Prometheus config with its rules. A missing tool
fails its test with the command that installs it (tests/helpers.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import ROLES, ROOT, service_ports
from helpers import require_tool as tool
from helpers import run_command as run

PROMETHEUS_YML = ROOT / "monitoring" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "monitoring" / "grafana"


# ---- Prometheus and Grafana against compose ---------------------------------------------------


def prometheus_targets(cfg: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Yield (where, host:port) for every address Prometheus is told to reach."""
    for job in cfg.get("scrape_configs", []):
        where = f"job {job['job_name']}"
        for sc in job.get("static_configs", []):
            for t in sc.get("targets", []):
                yield where, t
        for dns in job.get("dns_sd_configs", []):
            for n in dns.get("names", []):
                yield where, f"{n}:{dns['port']}"
        for rc in job.get("relabel_configs", []):
            if rc.get("target_label") == "__address__" and "$" not in rc.get("replacement", "$"):
                yield where, rc["replacement"]
    for am in cfg.get("alerting", {}).get("alertmanagers", []):
        for sc in am.get("static_configs", []):
            for t in sc.get("targets", []):
                yield "alerting", t


def test_prometheus_targets_are_compose_services_and_ports(model: dict[str, Any]) -> None:
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    targets = list(prometheus_targets(cfg))
    assert targets
    for where, target in targets:
        host, _, port = target.rpartition(":")
        svc = model["services"].get(host)
        assert svc is not None, f"{where}: {target} names no compose service"
        assert int(port) in service_ports(svc), f"{where}: {host} does not listen on {port}"
    scraped = {t.rpartition(":")[0] for _, t in targets}
    assert scraped >= {*ROLES, "redis-exporter", "redis-node-1", "redis-node-2", "redis-node-3"}


def test_prometheus_and_grafana_mount_the_single_source(model: dict[str, Any]) -> None:
    """Compose mounts monitoring/ itself, the files the native launcher also uses: no copies."""
    def binds(name: str) -> dict[str, Path]:
        return {v["target"]: Path(v["source"]) for v in model["services"][name]["volumes"]
                if v["type"] == "bind"}

    assert binds("prometheus") == {
        "/etc/prometheus/prometheus.yml": PROMETHEUS_YML,
        "/etc/prometheus/rules": PROMETHEUS_YML.parent / "rules"}
    assert binds("grafana") == {
        "/etc/grafana/provisioning": GRAFANA_DIR / "provisioning",
        "/var/lib/grafana/dashboards": GRAFANA_DIR / "dashboards"}
    for path in [*binds("prometheus").values(), *binds("grafana").values()]:
        assert path.exists(), path
    rule_globs = yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"]
    assert all(g.startswith("/etc/prometheus/rules/") for g in rule_globs)
    # Nobody keeps a second copy of a rule file or dashboard elsewhere in the repository.
    names = {p.name for p in (PROMETHEUS_YML.parent / "rules").glob("*.yml")}
    names |= {p.name for p in (GRAFANA_DIR / "dashboards").glob("*.json")}
    skip = {".git", ".venv", "monitoring", "node_modules", ".watchlog"}
    for path in ROOT.rglob("*"):
        if path.is_file() and path.name in names and not skip & set(path.relative_to(ROOT).parts):
            pytest.fail(f"{path} duplicates a file of monitoring/")


def test_every_grafana_dashboard_is_provisioned(model: dict[str, Any]) -> None:
    mounts = {v["target"]: Path(v["source"]) for v in model["services"]["grafana"]["volumes"]
              if v["type"] == "bind"}
    provider_dirs = []
    for f in (GRAFANA_DIR / "provisioning" / "dashboards").glob("*.y*ml"):
        for prov in yaml.safe_load(f.read_text()).get("providers", []):
            path = prov["options"]["path"]
            host = next((src / Path(path).relative_to(tgt) for tgt, src in mounts.items()
                         if Path(path).is_relative_to(tgt)), None)
            assert host is not None, f"{f.name}: {path} is not mounted into grafana"
            provider_dirs.append(host)
    dashboards = list((GRAFANA_DIR / "dashboards").rglob("*.json"))
    assert dashboards
    uids = [json.loads(d.read_text())["uid"] for d in dashboards]
    assert len(uids) == len(set(uids)), "dashboard uids must be unique"
    for d in dashboards:
        assert any(d.is_relative_to(p) for p in provider_dirs), f"{d} is not provisioned"


def test_grafana_datasource_points_at_prometheus(model: dict[str, Any]) -> None:
    env = model["services"]["grafana"]["environment"]
    for f in (GRAFANA_DIR / "provisioning" / "datasources").glob("*.y*ml"):
        for ds in yaml.safe_load(f.read_text())["datasources"]:
            url = re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], ds["url"])
            host_port = url.split("//", 1)[1].split("/", 1)[0]
            host, _, port = host_port.partition(":")
            assert int(port) in service_ports(model["services"][host]), url


def test_promtool_checks_the_compose_prometheus_config(tmp_path: Path) -> None:
    """promtool (Debian's, 2.x) on the compose config, its container paths mapped to the repo."""
    promtool = tool("promtool")
    text = PROMETHEUS_YML.read_text().replace(
        "/etc/prometheus/rules", str(PROMETHEUS_YML.parent / "rules"))
    assert "/etc/prometheus" not in text, "a container path the test does not map"
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    out = run(promtool, "check", "config", str(config))
    assert "SUCCESS" in out.stdout + out.stderr
