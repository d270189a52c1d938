"""A built wheel, installed in a fresh venv outside the tree, runs like a checkout.

The wheel carries the Lua scripts (watchlog/store/lua) and the monitoring files
(monitoring/ force-included as watchlog/_monitoring, pyproject.toml), both found through
importlib.resources. The fresh venv gets watchlog from the wheel only; its dependencies
come from the running interpreter's site-packages through a ``.pth`` path (a plain path:
that folder's own ``.pth`` files, among them the editable install of this checkout, are
not processed), so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ROOT
from watchlog.launcher.procs import BUS_OFFSET, free_redis_ports, port_free

PROBE = ("import json, watchlog, watchlog.launcher.monitoring as m\n"
         "from pathlib import Path\n"
         "from watchlog.launcher.observability import prometheus_service\n"
         "from watchlog.launcher.services import Ports\n"
         "made = prometheus_service(Path('probe'), '127.0.0.1', Ports(), ['127.0.0.1:1'], set())\n"
         "print(json.dumps({'package': watchlog.__file__, 'root': str(m.monitoring_root()),\n"
         "                  'prometheus': made if isinstance(made, str) else 'service'}))\n")


def run(argv: list[str], cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHLOG_", "VIRTUAL"))}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Build the wheel and install it (no dependencies) into a new venv; its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                 str(tmp / "dist"), str(ROOT)], tmp)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("watchlog-*.whl")
    venv = tmp / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)], tmp).returncode == 0
    purelib = run([str(venv / "bin" / "python"), "-c",
                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp)
    Path(purelib.stdout.strip(), "_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    pip = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
               "--no-index", str(wheel)], tmp)
    assert pip.returncode == 0, pip.stderr
    yield venv / "bin"


def probe(bin_dir: Path, cwd: Path) -> dict[str, str]:
    r = run([str(bin_dir / "python"), "-c", PROBE], cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def redis_base() -> int:
    """A first Redis port whose next two, and their bus ports, are free too."""
    for base in free_redis_ports("127.0.0.1", 20):
        if all(port_free("127.0.0.1", p) for i in range(3)
               for p in (base + i, base + i + BUS_OFFSET)):
            return base
    raise AssertionError("no three consecutive free ports")


@pytest.mark.slow
def test_installed_wheel_runs_up_detach_with_monitoring(installed: Path,
                                                        tmp_path: Path) -> None:
    found = probe(installed, tmp_path)
    assert found["package"].startswith(str(installed.parent))  # the wheel, not the checkout
    assert Path(found["root"], "prometheus", "rules", "alerts.yml").is_file()
    assert found["root"].startswith(str(installed.parent))
    ports = free_redis_ports("127.0.0.1", 8)
    names = ("producer", "consumer", "prometheus", "exporter", "simulator", "extractor",
             "grafana")
    args = [f"--{n}-port={p}" for n, p in zip(names, ports, strict=False)]
    state = tmp_path / "state"
    up = run([str(installed / "watchlog"), "up", "--detach", "--state-dir", str(state),
              f"--redis-port={redis_base()}", *args], tmp_path)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "skipped prometheus" not in up.stdout
        status = run([str(installed / "watchlog"), "status", "--json", "--state-dir",
                      str(state)], tmp_path)
        running = {c["component"] for c in json.loads(status.stdout) if c["state"] == "running"}
        assert {"prometheus", "redis-exporter", "producer", "consumer"} <= running
        # the reports page: its address printed, its templates and CSS in the wheel
        assert f"reports: http://127.0.0.1:{ports[1]}/reports/" in up.stdout
        for path in ("/reports/sign-in", "/reports/static/reports.css"):
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[1]}{path}", timeout=10) as r:
                assert r.status == 200, path
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[2]}/api/v1/rules",
                                    timeout=10) as r:
            groups = json.load(r)["data"]["groups"]
        assert groups and all(g["file"].startswith(found["root"]) for g in groups)
    finally:
        down = run([str(installed / "watchlog"), "down", "--state-dir", str(state)], tmp_path)
        assert down.returncode == 0, down.stderr


def test_installed_wheel_without_its_monitoring_files_skips_prometheus(
        installed: Path, tmp_path: Path) -> None:
    """Negative control: remove the package data and the same lookup finds nothing, so
    `up` would skip Prometheus (as a pip install did before the files shipped)."""
    found = probe(installed, tmp_path)
    assert found["prometheus"] == "service"
    shipped = Path(found["root"])
    hidden = shipped.with_name("_monitoring.hidden")
    shipped.rename(hidden)
    try:
        without = probe(installed, tmp_path)
        assert without["prometheus"].startswith("prometheus: no monitoring/")
    finally:
        hidden.rename(shipped)
