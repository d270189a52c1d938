"""The CLIs against live services: simulate, report, export, extract; the retrying client.

The producer and consumer are real gunicorn servers on a real cluster (``conftest.py``).
The only fake is a tiny HTTP peer that answers 503 with ``Retry-After``: it stands in for
an overloaded server, not for Redis.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import extracted, run, simulate
from watchlog.clients import simulator
from watchlog.clients.extractor import Extractor
from watchlog.clients.http import Client, RetryPolicy, token_for
from watchlog.core.errors import GaveUp


def stored(env: dict[str, Any]) -> int:
    """Count the fleet's logs of today and yesterday (a run may straddle midnight)."""
    today = datetime.now(UTC).date()
    return sum(run(env, "report", "daily", "--date", str(d), "--json")["count"]
               for d in (today, today - timedelta(days=1)))


def test_simulate_batches_are_stored_once_and_replay_as_duplicates(env: dict[str, Any]
                                                                    ) -> None:
    first = simulate(env, "--count", "500", "--batch", "50", "--seed", "1")
    assert first["created"] == 500 and first["acknowledged"] == 500 and first["failed"] == 0
    assert stored(env) == 500
    again = simulate(env, "--count", "500", "--batch", "50", "--seed", "1", "--no-gzip")
    assert again["duplicate"] == 500 and again["created"] == 0
    assert stored(env) == 500


def test_simulate_faults_lose_nothing(env: dict[str, Any], tmp_path: Path) -> None:
    ack_log = tmp_path / "acked.txt"
    sent_before = simulator.REGISTRY.get_sample_value("watchlog_simulator_sent_total") or 0
    out = simulate(env, "--count", "400", "--batch", "20", "--seed", "3", "--drop-rate",
                   "0.3", "--offline-rate", "0.05", "--ack-log", str(ack_log))
    assert out["acknowledged"] == 400 and out["failed"] == 0 and out["retried"] > 0
    assert out["event_ids_file"] == str(ack_log)
    assert len(set(ack_log.read_text().split())) == 400
    assert stored(env) == 400
    sent_after = simulator.REGISTRY.get_sample_value("watchlog_simulator_sent_total")
    assert sent_after == sent_before + 400


def test_simulate_single_posts(env: dict[str, Any]) -> None:
    out = simulate(env, "--count", "30", "--users", "5", "--concurrency", "2")
    assert out["created"] == 30 and stored(env) == 30


def test_simulate_refused_token_exits_non_zero(env: dict[str, Any]) -> None:
    bad = {**env, "WATCHLOG_INGEST_TOKEN": "not-a-token"}
    result = run(bad, "simulate", "--count", "5", "--rate", "0", "--quiet", code=1)
    assert "refused" in result.output


def test_extract_drains_everything_exactly_once(env: dict[str, Any], tmp_path: Path) -> None:
    ack_log = tmp_path / "acked.txt"
    simulate(env, "--count", "1000", "--batch", "100", "--seed", "4", "--ack-log", str(ack_log))
    out = tmp_path / "out"
    summary = run(env, "extract", "--name", "t", "-o", str(out), "--max", "150", "--json")
    assert summary["written"] == summary["acknowledged"] == 1000
    assert summary["skipped_duplicates"] == 0
    lines = extracted(out)
    assert len({x["feed_id"] for x in lines}) == len(lines) == 1000
    assert {x["event_id"] for x in lines} == set(ack_log.read_text().split())
    assert run(env, "extract", "--name", "t", "-o", str(out), "--json")["batches"] == 0


def test_extract_after_a_crash_does_not_write_twice(env: dict[str, Any], tmp_path: Path,
                                                    consumer_url: str) -> None:
    simulate(env, "--count", "600", "--batch", "100", "--seed", "5")
    out = tmp_path / "out"
    with Client(consumer_url, token_for("reader", env)) as c:
        crashed = Extractor(c, "t", out, max_items=200, visibility=1)
        items = crashed.fetch()
        assert crashed.write(items) == len(items) > 0  # ... and dies before its ack
    time.sleep(1.2)  # past the visibility timeout: the batch is due again
    summary = run(env, "extract", "--name", "t", "-o", str(out), "--visibility-timeout", "1",
                  "--json")
    assert summary["skipped_duplicates"] == len(items)
    assert summary["written"] == 600 - len(items)
    assert summary["acknowledged"] == 600
    lines = extracted(out)
    assert len({x["feed_id"] for x in lines}) == len(lines) == 600


def test_extract_dropped_batches_come_back_and_are_written_once(env: dict[str, Any],
                                                               tmp_path: Path) -> None:
    simulate(env, "--count", "400", "--batch", "100", "--seed", "7")
    out = tmp_path / "out"
    first = run(env, "extract", "--name", "d", "-o", str(out), "--max", "50", "--drop-rate",
                "0.4", "--seed", "2", "--visibility-timeout", "1", "--json")
    assert first["dropped"] > 0 and first["written"] == 400 - 50 * first["dropped"]
    time.sleep(1.2)  # the dropped batches are due again
    second = run(env, "extract", "--name", "d", "-o", str(out), "--visibility-timeout", "1",
                 "--json")
    assert second["written"] == 50 * first["dropped"] and second["skipped_duplicates"] == 0
    lines = extracted(out)
    assert len({x["feed_id"] for x in lines}) == len(lines) == 400


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_export_rows_match_the_store(env: dict[str, Any], tmp_path: Path, fmt: str) -> None:
    simulate(env, "--count", "300", "--batch", "100", "--seed", "6")
    target = tmp_path / f"all.{fmt}"
    today = str(datetime.now(UTC).date())
    summary = run(env, "export", "--from", today, "--to", today, "--format", fmt,
                  "-o", str(target), "--json")
    lines = target.read_text().splitlines()
    assert summary["rows"] == stored(env) == 300
    assert len(lines) == 300 + (fmt == "csv")
    assert summary["bytes"] == target.stat().st_size
    assert not target.with_name(target.name + ".part").exists()


def test_export_and_extract_files_are_private_whatever_the_umask(env: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    """An outside tester's shell (umask 022) got a 0755 exports folder and a 0644 CSV of
    coordinates. Negative control: a file this test writes under the same umask is 0644."""
    simulate(env, "--count", "20", "--batch", "20", "--seed", "9")
    today = str(datetime.now(UTC).date())
    old = os.umask(0o022)
    try:
        run(env, "export", "--from", today, "--to", today, "--format", "csv",
            "-o", str(tmp_path / "exports" / "x.csv"), "--json")
        run(env, "extract", "--name", "private", "-o", str(tmp_path / "extracts"), "--json")
        (tmp_path / "control.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "control.txt").stat().st_mode & 0o077 == 0o044
    written = [p for p in (tmp_path / "exports").rglob("*")] + [
        p for p in (tmp_path / "extracts").rglob("*")] + [tmp_path / "extracts"]
    assert len(written) > 2
    for path in written:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"


def test_report_user_table(env: dict[str, Any]) -> None:
    simulate(env, "--count", "50", "--batch", "50", "--users", "1", "--seed", "7")
    doc = run(env, "report", "user", "1", "--json")
    assert doc["total"]["count"] == 50
    assert "total" in run(env, "report", "user", "1").output


# The retrying client, against a peer that answers a script of statuses.


class Peer(BaseHTTPRequestHandler):
    script: list[tuple[int, str | None]] = []
    seen: list[float] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        Peer.seen.append(time.monotonic())
        status, retry_after = Peer.script.pop(0) if Peer.script else (200, None)
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def peer() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Peer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Peer.script, Peer.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("hint", ["seconds", "http-date"])
def test_http_honours_retry_after(peer: str, hint: str) -> None:
    """Each wait is the one the server asked for (recorded, not timed)."""
    if hint == "seconds":
        Peer.script = [(503, "1"), (429, "0.2")]
        expected: list[object] = [1.0, 0.2]
    else:
        when = formatdate(time.time() + 30, usegmt=True)
        Peer.script = [(503, when)]
        expected = [pytest.approx(30, abs=2)]
    waits: list[float] = []
    with Client(peer, "t", random_seed=1, sleep=waits.append) as c:
        assert c.get("/x").status_code == 200
        assert (c.attempts, c.retries) == (len(expected) + 1, len(expected))
    assert waits == expected and len(Peer.seen) == len(expected) + 1


def test_http_without_retry_after_uses_its_own_backoff(peer: str) -> None:
    """Negative control: the same check tells a hinted wait from the client's own jitter."""
    Peer.script = [(503, None), (429, None)]
    waits: list[float] = []
    policy = RetryPolicy(base=0.01, cap=0.05)
    with Client(peer, "t", policy=policy, random_seed=1, sleep=waits.append) as c:
        assert c.get("/x").status_code == 200
    assert len(waits) == 2 and waits != [1.0, 0.2] and all(0 <= w <= 0.05 for w in waits)


def test_http_gives_up_within_its_bounds(peer: str) -> None:
    Peer.script = [(503, "0.05")] * 10
    with Client(peer, policy=RetryPolicy(attempts=4, deadline=5)) as c:
        with pytest.raises(GaveUp, match="after 4 attempts") as err:
            c.get("/x")
        assert err.value.response is not None and err.value.response.status_code == 503
    Peer.script = [(503, "30")]  # a wait longer than the time budget: give up at once
    waits: list[float] = []
    with Client(peer, policy=RetryPolicy(deadline=2), sleep=waits.append) as c:
        with pytest.raises(GaveUp, match="after 1 attempts"):
            c.get("/x")
        assert (c.attempts, waits) == (1, [])  # no wait, no second request


def test_http_never_retries_other_client_errors(peer: str) -> None:
    Peer.script = [(422, "1")]
    with Client(peer) as c:
        assert c.get("/x").status_code == 422 and c.attempts == 1


def test_http_connection_errors_retry_with_seeded_full_jitter() -> None:
    runs: list[list[float]] = [[], []]
    policy = RetryPolicy(attempts=6, deadline=60, base=0.1, cap=1)
    for delays in runs:
        with Client("http://127.0.0.1:9", policy=policy, random_seed=3, sleep=delays.append) as c:
            with pytest.raises(GaveUp, match="ConnectError"):
                c.get("/x")
            assert (c.attempts, c.retries) == (6, 5)
    assert runs[0] == runs[1] and len(runs[0]) == 5  # a seed replays the same waits
    assert all(0 <= d <= min(1, 0.1 * 2**n) for n, d in enumerate(runs[0]))


def test_token_for_reads_environment_then_file(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.env"
    creds.write_text("# generated\nWATCHLOG_READER_KEY=from-file\nWATCHLOG_ADMIN_KEY=adm\n")
    assert token_for("reader", {"WATCHLOG_READER_KEY": "from-env"}) == "from-env"
    assert token_for("reader", {"WATCHLOG_STATE_DIR": str(tmp_path)}) == "from-file"
    assert token_for("admin", {"WATCHLOG_CREDENTIALS_FILE": str(creds)}) == "adm"
    assert token_for("ingest", {"WATCHLOG_CREDENTIALS_FILE": str(creds)}) is None


def test_http_timeouts_are_set() -> None:
    with Client("http://127.0.0.1:9") as c:
        assert c.http.timeout == httpx.Timeout(10.0, connect=2.0)


def test_the_simulated_fleet_does_exactly_the_schemas_activity_types() -> None:
    """The fleet's profiles name the activity types a second time: they must be the schema's.

    (A type added to the schema and not to the fleet would never be simulated; a profile the
    schema lacks would send logs the producer refuses.)
    """
    from watchlog.clients import fleet
    from watchlog.core import schema

    assert sorted(fleet.TYPES) == sorted(schema.ACTIVITY_TYPES)
