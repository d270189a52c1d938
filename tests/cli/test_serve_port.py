"""`watchlog serve` refuses a port another server listens on, unless told to share it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from watchlog.launcher.procs import terminate


@pytest.mark.parametrize("reuse", [False, True], ids=["refused", "reuse-port"])
def test_serve_producer_refuses_the_port_of_a_running_producer(
        producer_url: str, tmp_path: Path, reuse: bool) -> None:
    """The live producer (granian) holds the port. Negative control: with --reuse-port the
    check is off, and a second server starts beside the first, as it did before."""
    port = str(urlsplit(producer_url).port)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "WATCHLOG_WORKERS": "1"}
    argv = [sys.executable, "-m", "watchlog", "serve", "producer", "--port", port]
    proc = subprocess.Popen(argv + (["--reuse-port"] if reuse else []), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        if not reuse:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 1
            assert f"port {port} on 127.0.0.1 is already in use" in out
            return
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        seen = ""
        while "Listening at" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"the server exited: {seen}"
            seen += line
        assert "Listening at" in seen and proc.poll() is None
    finally:
        if proc.poll() is None:
            terminate(proc.pid, 10)
