"""`watchlog chaos verify` against real clusters, one run per nemesis, over HTTP only.

Each run is the command a user types: a separate process writes 2,000 logs with its own
ledger through the producer API while the nemesis acts on a cluster of 3 masters and 3
replicas that the launcher started (`Stack`, as `watchlog up --replicas 1 --detach`), then
reads everything back through the consumer API. Nothing here touches the store: a passing
run proves, as a client sees it, that no acknowledged log was lost, none stored or extracted
twice, none appeared unasked, and no first send was answered `duplicate`.

The negative controls: the same freeze-replica run against APIs that do not wait for a
replica (WATCHLOG_WAIT_REPLICAS=0) must lose acknowledged logs and exit 1; and `judge`,
the checker's verdict, is shown each failure it must catch on hand-made read views.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from watchlog.launcher.procs import free_redis_ports
from watchlog.launcher.verify import failed, judge

COUNT = "2000"


class LocalSystem:
    """`watchlog up --replicas 1 --detach` without the simulator and monitoring."""

    def __init__(self, state: Path, **env: str) -> None:
        from rich.console import Console

        from watchlog.core.settings import Settings
        from watchlog.launcher.services import Ports
        from watchlog.launcher.stack import Stack

        free = free_redis_ports("127.0.0.1", 2)
        settings = Settings.from_env({"WATCHLOG_PRODUCER_PORT": str(free[0]),
                                      "WATCHLOG_CONSUMER_PORT": str(free[1]), **env})
        self.state = state
        self.urls = [f"http://127.0.0.1:{free[0]}", f"http://127.0.0.1:{free[1]}"]
        self.stack = Stack(settings, state, replicas=1, simulate=False, monitoring=False,
                           redis_port=None, ports=Ports(free[0], free[1]),
                           console=Console(file=open(os.devnull, "w")))  # noqa: SIM115

    def __enter__(self) -> LocalSystem:
        self.stack.up(detach=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.down()

    def verify(self, nemesis: str, *extra: str) -> tuple[int, dict[str, Any]]:
        """Run `watchlog chaos verify --json` as a user does; return its exit code and result."""
        argv = [sys.executable, "-m", "watchlog", "chaos", "verify", "--nemesis", nemesis,
                "--count", COUNT, "--json", "--state-dir", str(self.state),
                "--producer-url", self.urls[0], "--consumer-url", self.urls[1], *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHLOG_")}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env)
        assert proc.stdout.strip(), proc.stderr
        result = json.loads(proc.stdout)
        print(f"\n{nemesis}: exit {proc.returncode}, " + brief(result))
        return proc.returncode, result


def brief(r: dict[str, Any]) -> str:
    return (f"attempted {r['attempted']} acknowledged {r['acknowledged']} lost {r['lost']} "
            f"duplicated {r['duplicated']} indeterminate {r['indeterminate']} (stored once "
            f"{r['indeterminate_stored_once']}, absent {r['indeterminate_absent']}) phantom "
            f"{r['phantom']} misreported {r['misreported']} errors {r['errors']} "
            f"longest stall {r['longest_stall_s']} s; during the nemesis "
            f"{r['during_nemesis']}; {r['nemesis_log']}")


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    with LocalSystem(tmp_path_factory.mktemp("verify")) as s:
        yield s


def assert_held(code: int, r: dict[str, Any]) -> None:
    """The checker's verdict is OK, and it did check something."""
    failures = {k: r[k] for k in ("lost", "duplicated", "phantom", "misreported",
                                  "miscounted", "indeterminate_partial")}
    assert set(failures.values()) == {0}, brief(r)
    assert r["verdict"] == "ok" and r["failed"] == [] and code == 0
    assert r["attempted"] == int(COUNT)
    assert r["acknowledged"] + r["indeterminate"] + r["rejected"] == r["attempted"]
    assert r["rejected"] == 0 and r["acknowledged"] > 0
    read = r["read_back"]
    for view in ("export", "pages", "extractor"):  # every acknowledged log, in every view
        assert read[view] >= r["acknowledged"], (view, read)
    assert read["report_count"] == read["export_day_total"]
    assert r["single_posts"] > 0 and r["batches"] > 0 and r["same_millisecond_pairs"] > 0


# -- every nemesis on one replicated cluster ------------------------------------------------


@pytest.mark.chaos
@pytest.mark.parametrize("nemesis", ["none", "faults", "kill-master", "pause-master",
                                     "reshard", "restart-all", "kill-extractor"])
def test_verify_nemesis_loses_nothing_and_counts_nothing_twice(system: LocalSystem,
                                                               nemesis: str) -> None:
    code, r = system.verify(nemesis)
    assert_held(code, r)
    during = r["during_nemesis"]
    assert during["requests"] > 0, "no traffic overlapped the harm"
    log = " | ".join(r["nemesis_log"])
    if nemesis == "faults":  # injected 503s reached the client, some after commit
        assert r["errors"].get("503", 0) > 0 and r["duplicate_answers"] > 0
    if nemesis in ("kill-master", "pause-master"):
        assert "promoted" in log, log
    if nemesis == "reshard":
        # Live moves, traffic acknowledged meanwhile, and not one error reached a client.
        assert "moved them" in log and during["acknowledged"] > 0
        assert r["errors"] == {}, r["error_samples"]
    if nemesis == "restart-all":
        assert "every node stopped" in log
    if nemesis == "kill-extractor":  # `watchlog extract` SIGKILLed mid-run, then restarted
        assert "SIGKILL extractor" in log
        assert r["read_back"]["extractor"] == r["read_back"]["export"]


@pytest.mark.chaos
def test_verify_freeze_replica_then_failover_loses_no_acknowledged_log(system: LocalSystem
                                                                       ) -> None:
    """A replica frozen past the node timeout, its master killed, the replica promoted:
    writes wait for a replica (the default), so none acknowledged meanwhile is lost."""
    code, r = system.verify("freeze-replica")
    log = " | ".join(r["nemesis_log"])
    assert "flagged failed" in log and "SIGKILL master" in log and "promoted" in log, log
    assert_held(code, r)


@pytest.mark.chaos
def test_verify_freeze_replica_without_waiting_loses_acknowledged_logs(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Negative control: the same run against APIs that acknowledge without a replica
    (WATCHLOG_WAIT_REPLICAS=0) loses acknowledged logs, and the checker says so."""
    with LocalSystem(tmp_path_factory.mktemp("verify-nowait"), WATCHLOG_WAIT_REPLICAS="0") as s:
        code, r = s.verify("freeze-replica")
    assert code == 1 and r["verdict"] == "failed" and "lost" in r["failed"]
    assert r["lost"] > 0 and len(r["ids"]["lost"]) == r["lost"]
    # Lost from every view alike: the logs are gone, not merely unindexed.
    assert set(r["missing_by_view"].values()) == {r["lost"]}


# -- the verdict itself: each failure it must catch -----------------------------------------


def doc(eid: str, user: str = "u1", ts: int = 1_700_000_000_000) -> dict[str, Any]:
    return {"event_id": eid, "user_id": user, "_ts": ts, "activity_type": "running",
            "duration": 60, "timestamp": "2023-11-14T22:13:20Z"}


def test_verify_judge_catches_loss_duplicates_phantoms_and_inconsistency() -> None:
    sent = {e: doc(e) for e in ("a", "b", "c", "d", "e", "f")}
    acked, rejected = {"a", "b", "c"}, {"f"}
    altered = {**doc("c"), "duration": 61}
    views = {"export": [doc("a"), doc("b"), doc("b"), altered, doc("d"), doc("f"), doc("zz")],
             "pages": [doc("a"), doc("b"), doc("c")],
             "extractor": [doc("a"), doc("b"), doc("c"), doc("d")]}
    v = judge(sent, acked, rejected, views)
    assert v["lost"] == 0  # every acknowledged id is in every view
    assert v["ids"]["duplicated"] == ["b"]
    assert v["ids"]["phantom"] == ["c", "f", "zz"]  # altered, rejected yet stored, never sent
    assert (v["indeterminate"], v["indeterminate_stored_once"], v["indeterminate_absent"],
            v["ids"]["indeterminate_partial"]) == (2, 0, 1, ["d"])  # d: not in pages
    missing = judge(sent, acked, rejected, {"export": [doc("a"), doc("b")]})
    assert missing["ids"]["lost"] == ["c"] and missing["missing_by_view"] == {"export": 1}
    ok = judge(sent, acked, rejected, {"export": [doc("a"), doc("b"), doc("c"), doc("e")]})
    result = {**ok, "misreported": 0, "miscounted": 0}
    assert failed(result) == [] and ok["indeterminate_stored_once"] == 1
    assert failed({**result, "misreported": 1}) == ["misreported"]
    assert failed({**result, "miscounted": 1}) == ["miscounted"]
    assert failed(v | {"misreported": 0, "miscounted": 0}) == [
        "duplicated", "phantom", "indeterminate_partial"]


def test_verify_without_a_running_system_gives_no_verdict(tmp_path: Path) -> None:
    """Exit 2 (no verdict), with a message naming the URL: never a 0 nor a 1."""
    port = free_redis_ports("127.0.0.1", 1)[0]  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHLOG_")}
    env.update(WATCHLOG_INGEST_TOKEN="i" * 32, WATCHLOG_READER_KEY="r" * 32)
    proc = subprocess.run([sys.executable, "-m", "watchlog", "chaos", "verify", "--state-dir",
                           str(tmp_path), "--producer-url", f"http://127.0.0.1:{port}",
                           "--consumer-url", f"http://127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2, proc.stderr
    assert f"127.0.0.1:{port} does not answer" in proc.stderr and proc.stdout == ""
