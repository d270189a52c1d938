"""redis_exporter, Prometheus, Alertmanager (+ its alert sink) and Grafana as native services.

Each runs only if installed; a missing one is reported with the package that provides it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import sys
from pathlib import Path

from watchlog.core.credentials import Credentials
from watchlog.launcher.redis.conf import EXPORTER_USER
from watchlog.launcher.services import Ports, Service, find_binary, missing_hint

log = logging.getLogger(__name__)


def monitoring_root() -> Path | None:
    """Return the checkout's ``monitoring/`` directory, or None when not shipped."""
    try:
        from watchlog.launcher.monitoring import monitoring_root as root
    except ImportError:
        return None
    path = root()
    return path if path.is_dir() else None


# Retention: the SLO is stated on 30 days (its error budget); the burn-rate windows reach 3 days.
RETENTION = "30d"
# Where every local-only listener binds, whatever WATCHLOG_HOST says (the exporter holds the
# Redis password; Alertmanager and the sink have no authentication on reads).
LOOPBACK = "127.0.0.1"


def _private_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (0600 from creation)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def exporter_password_file(state: Path, redis_nodes: list[str], password: str) -> Path:
    """Write the exporter's password map: the password for these nodes and no other target.

    redis_exporter sends ``--redis.password`` (or ``REDIS_PASSWORD``) to whatever target a
    ``/scrape?target=`` names, so anyone who can reach the exporter could have it send the
    password to a port of their own. With a password *file* instead, it authenticates only to
    the ``redis://host:port`` entries listed; any other target gets no password.
    """
    entries = {f"redis://{node}": password for node in redis_nodes}
    return _private_file(state / "exporter" / "passwords.json", json.dumps(entries, indent=2))


def exporter_service(state: Path, host: str, ports: Ports, creds: Credentials,
                     redis_nodes: list[str]) -> Service | str:
    """Return redis_exporter in multi-target mode (``/scrape?target=…``), or why not."""
    binary = find_binary("redis-exporter")
    if binary is None:
        return missing_hint("redis-exporter")
    # --redis.addr= : no default target, Prometheus names each node in /scrape?target=.
    # --config-command=- : no CONFIG GET, which the exporter ACL user may not run (see
    # redis_conf.EXPORTER_RULES).
    # --redis.password-file : the password only for the cluster's own nodes (see
    # exporter_password_file); never on argv, never in the environment.
    # --connection-timeout=3s : a hung (paused) node reads redis_up 0 within the scrape,
    # instead of failing the whole scrape.
    # --include-system-metrics : redis_total_system_memory_bytes, for nodes without maxmemory.
    # Listens on loopback always: it is scraped by the Prometheus beside it.
    passwords = exporter_password_file(state, redis_nodes, creds.redis_exporter_password)
    argv = [binary, "--redis.addr=", "--config-command=-", "--connection-timeout=3s",
            f"--redis.password-file={passwords}", "--include-system-metrics",
            f"--web.listen-address={LOOPBACK}:{ports.exporter}"]
    env = {k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD"}
    env["REDIS_USER"] = EXPORTER_USER
    return Service("redis-exporter", argv, f"{LOOPBACK}:{ports.exporter}", "tcp", env)


def prometheus_service(state: Path, host: str, ports: Ports, redis_nodes: list[str],
                       clients: set[str], *, rules_dir: Path | None = None,
                       alertmanager: bool = True) -> Service | str:
    """Write the native Prometheus config and return Prometheus, or why it is skipped.

    ``rules_dir`` replaces the shipped rules (tests shorten the alerts' ``for:`` there).
    """
    binary = find_binary("prometheus")
    if binary is None:
        return missing_hint("prometheus")
    root = monitoring_root()
    try:
        from watchlog.launcher.monitoring import render_native_prometheus
    except ImportError:
        return "prometheus: watchlog.launcher.monitoring is not available in this install"
    if root is None:
        return "prometheus: no monitoring/ directory next to the package (rules, config)"
    config = render_native_prometheus(
        producer=f"{host}:{ports.producer}", consumer=f"{host}:{ports.consumer}",
        simulator=f"{host}:{ports.simulator}" if "simulator" in clients else None,
        extractor=f"{host}:{ports.extractor}" if "extractor" in clients else None,
        exporter=f"{LOOPBACK}:{ports.exporter}", redis_nodes=redis_nodes,
        rules_dir=rules_dir or root / "prometheus" / "rules",
        prometheus=f"{host}:{ports.prometheus}",
        alertmanager=f"{LOOPBACK}:{ports.alertmanager}" if alertmanager else None)
    directory = state / "prometheus"
    (directory / "data").mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(config)
    address = f"{host}:{ports.prometheus}"
    # No --web.enable-lifecycle: nobody may stop or reload it over HTTP; `watchlog up`
    # rewrites the config and restarts it.
    argv = [binary, f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address={address}",
            f"--storage.tsdb.retention.time={RETENTION}"]
    return Service("prometheus", argv, address, f"http://{address}/-/ready", dict(os.environ))


def alert_sink_service(state: Path, ports: Ports) -> Service:
    """Return ``watchlog alert-sink``: Alertmanager's default receiver, read by the CLI."""
    token = _private_file(state / "alertmanager" / "sink.token", secrets.token_urlsafe(32))
    address = f"{LOOPBACK}:{ports.alert_sink}"
    argv = [sys.executable, "-m", "watchlog", "alert-sink", "--listen", address,
            "--file", str(state / "alerts" / "alerts.jsonl"), "--token-file", str(token)]
    return Service("alert-sink", argv, address, f"http://{address}/-/ready", dict(os.environ))


def alertmanager_service(state: Path, ports: Ports,
                         timing: dict[str, str] | None = None) -> Service | str:
    """Write the native Alertmanager config and return Alertmanager, or why it is skipped."""
    binary = find_binary("alertmanager")
    if binary is None:
        return missing_hint("alertmanager")
    from watchlog.launcher.monitoring import render_native_alertmanager

    directory = state / "alertmanager"
    (directory / "data").mkdir(parents=True, exist_ok=True)
    config = render_native_alertmanager(
        sink_url=f"http://{LOOPBACK}:{ports.alert_sink}/webhook",
        token_file=directory / "sink.token", timing=timing)
    (directory / "alertmanager.yml").write_text(config)
    address = f"{LOOPBACK}:{ports.alertmanager}"
    # --cluster.listen-address= : no gossip port (it would listen on 0.0.0.0:9094).
    argv = [binary, f"--config.file={directory / 'alertmanager.yml'}",
            f"--storage.path={directory / 'data'}", f"--web.listen-address={address}",
            "--cluster.listen-address="]
    return Service("alertmanager", argv, address, f"http://{address}/-/ready", dict(os.environ))


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

    ``clients`` names the clients that run (each is scraped only when it does). The alert
    sink and Alertmanager start before Prometheus, so its first alerts have somewhere to go.
    """
    services, notes = [], []
    alerting = alertmanager_service(state, ports)
    made_list: list[Service | str] = [exporter_service(state, host, ports, creds, redis_nodes)]
    if isinstance(alerting, Service):
        made_list += [alert_sink_service(state, ports), alerting]
    else:
        made_list.append(alerting)
    made_list += [prometheus_service(state, host, ports, redis_nodes, clients,
                                     alertmanager=isinstance(alerting, Service)),
                  grafana_service(state, host, ports, creds)]
    for made in made_list:
        if isinstance(made, Service):
            services.append(made)
        else:
            notes.append(made)
    return services, notes
