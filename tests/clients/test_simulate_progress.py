"""`watchlog simulate`: a run with an end goes as fast as the producer takes logs, and shows
progress on stderr (periodic lines when not a terminal), never on stdout with ``--json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from watchlog.cli.simulate import SEED_RATE, default_rate
from watchlog.core.settings import Settings


def simulate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "watchlog", "simulate", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def env(cluster_settings: Settings, producer_url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WATCHLOG_")}
    return {**base, "WATCHLOG_PRODUCER_URL": producer_url,
            "WATCHLOG_STATE_DIR": str(Path(cluster_settings.state_dir))}


def test_simulate_count_without_rate_sends_all_with_progress_lines(env: dict[str, str]) -> None:
    r = simulate(env, "--count", "600", "--batch", "20", "--json", "--progress-every", "0.1")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)  # stdout is the summary object only
    assert summary["acknowledged"] == 600 and summary["failed"] == 0
    lines = r.stderr.splitlines()
    assert "as fast as the producer takes them" in lines[0]
    assert lines[-1].startswith("sent 600/600 ")  # the final progress line
    assert all(ln.startswith("sent ") and "/600" in ln for ln in lines[1:])


def test_simulate_pace_is_the_default_only_without_an_end(env: dict[str, str]) -> None:
    """Negative control: at the seed's pace the same --count would not finish; bounded by
    --duration, it sends a handful, which the run above shows is not what --count gets."""
    assert default_rate(None, 600, None) == 0.0 and default_rate(None, None, 5) == 0.0
    assert default_rate(None, None, None) == SEED_RATE and default_rate(2, 600, None) == 2
    r = simulate(env, "--count", "600", "--rate", str(SEED_RATE), "--duration", "1",
                 "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sent"] < 600 and r.stderr == ""
