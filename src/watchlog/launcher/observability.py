"""redis_exporter, Prometheus and Grafana as native services, each only if installed."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from watchlog.launcher.credentials import Credentials
from watchlog.launcher.redis_conf import EXPORTER_USER
from watchlog.launcher.services import Ports, Service, find_binary, missing_hint

log = logging.getLogger(__name__)


def monitoring_root() -> Path | None:
    """Return the checkout's ``monitoring/`` directory, or None when not shipped."""
    try:
        from watchlog.monitoring import monitoring_root as root
    except ImportError:
        return None
    path = root()
    return path if path.is_dir() else None


def exporter_service(host: str, ports: Ports, creds: Credentials) -> Service | str:
    """Return redis_exporter in multi-target mode (``/scrape?target=…``), or why not."""
    binary = find_binary("redis-exporter")
    if binary is None:
        return missing_hint("redis-exporter")
    # --redis.addr= : no default target, Prometheus names each node in /scrape?target=.
    # --config-command=- : no CONFIG GET, which the exporter ACL user may not run (see
    # redis_conf.EXPORTER_RULES). The password goes by environment, never on argv.
    # --connection-timeout=3s : a hung (paused) node reads redis_up 0 within the scrape,
    # instead of failing the whole scrape.
    argv = [binary, "--redis.addr=", "--config-command=-", "--connection-timeout=3s",
            f"--web.listen-address={host}:{ports.exporter}"]
    env = {**os.environ, "REDIS_USER": EXPORTER_USER,
           "REDIS_PASSWORD": creds.redis_exporter_password}
    return Service("redis-exporter", argv, f"{host}:{ports.exporter}", "tcp", env)


def prometheus_service(state: Path, host: str, ports: Ports, redis_nodes: list[str],
                       clients: set[str]) -> Service | str:
    """Write the native Prometheus config and return Prometheus, or why it is skipped."""
    binary = find_binary("prometheus")
    if binary is None:
        return missing_hint("prometheus")
    root = monitoring_root()
    try:
        from watchlog.monitoring import render_native_prometheus
    except ImportError:
        return "prometheus: watchlog.monitoring is not available in this install"
    if root is None:
        return "prometheus: no monitoring/ directory next to the package (rules, config)"
    config = render_native_prometheus(
        producer=f"{host}:{ports.producer}", consumer=f"{host}:{ports.consumer}",
        simulator=f"{host}:{ports.simulator}" if "simulator" in clients else None,
        extractor=f"{host}:{ports.extractor}" if "extractor" in clients else None,
        exporter=f"{host}:{ports.exporter}", redis_nodes=redis_nodes,
        rules_dir=root / "prometheus" / "rules", prometheus=f"{host}:{ports.prometheus}")
    directory = state / "prometheus"
    (directory / "data").mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(config)
    address = f"{host}:{ports.prometheus}"
    argv = [binary, f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address={address}",
            "--storage.tsdb.retention.time=7d"]
    return Service("prometheus", argv, address, f"http://{address}/-/ready", dict(os.environ))


def grafana_service(state: Path, host: str, ports: Ports, creds: Credentials) -> Service | str:
    """Return Grafana provisioned from ``monitoring/grafana``, or why it is skipped."""
    binary = find_binary("grafana")
    root = monitoring_root()
    if binary is None:
        return missing_hint("grafana")
    if root is None or not (root / "grafana" / "provisioning").is_dir():
        return "grafana: no monitoring/grafana/provisioning to load"
    provisioning = _provisioning(state / "grafana", root / "grafana")
    env = {**os.environ,
           "GF_PATHS_PROVISIONING": str(provisioning),
           "GF_PATHS_DATA": str(state / "grafana" / "data"),
           "GF_PATHS_LOGS": str(state / "grafana" / "logs"),
           "GF_SERVER_HTTP_ADDR": host, "GF_SERVER_HTTP_PORT": str(ports.grafana),
           # Never admin/admin: the admin API key of watchlog doubles as Grafana's password.
           "GF_SECURITY_ADMIN_PASSWORD": creds.admin_key,
           "WATCHLOG_PROMETHEUS_URL": f"http://{host}:{ports.prometheus}"}
    argv = [binary, "server"] if Path(binary).name == "grafana" else [binary]
    home = Path("/usr/share/grafana")
    if home.is_dir():
        argv.append(f"--homepath={home}")
    address = f"{host}:{ports.grafana}"
    return Service("grafana", argv, address, f"http://{address}/api/health", env)


def _provisioning(target: Path, source: Path) -> Path:
    """Copy the provisioning files, pointing the dashboards provider at the checkout."""
    dest = target / "provisioning"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source / "provisioning", dest)
    for path in (dest / "dashboards").glob("*.y*ml"):
        text = path.read_text().replace("/var/lib/grafana/dashboards",
                                        str((source / "dashboards").resolve()))
        path.write_text(text)
    return dest


def monitoring_services(state: Path, host: str, ports: Ports, creds: Credentials,
                        redis_nodes: list[str],
                        clients: set[str]) -> tuple[list[Service], list[str]]:
    """Return the monitoring services that can run here, and a note for each skipped one.

    ``clients`` names the clients that run (each is scraped only when it does).
    """
    services, notes = [], []
    for made in (exporter_service(host, ports, creds),
                 prometheus_service(state, host, ports, redis_nodes, clients),
                 grafana_service(state, host, ports, creds)):
        if isinstance(made, Service):
            services.append(made)
        else:
            notes.append(made)
    return services, notes
