"""Growing and shrinking the Redis Cluster live: `watchlog cluster add/remove/rebalance`.

Each test starts its own small system with the project's launcher (`Stack`, as `watchlog up
--detach`), because these tests change the cluster's shape. Load is real HTTP: the checker
of `watchlog chaos verify` writes with its own ledger while the `grow-shrink` nemesis adds a
master (16 partitions move to it) and removes it again (they move back); meanwhile the
simulator writes, a reader pages and an extractor drains, each counting every error it sees.

Negative controls: the same run with partitions handed over the naive way (ownership
moved without the keys) loses acknowledged logs and the checker says so; the spread check
fails on a grow interrupted before its moves, and passes once `rebalance` resumed it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from watchlog.launcher import verify
from watchlog.launcher.procs import free_redis_ports
from watchlog.launcher.redis import scale
from watchlog.launcher.verify import (
    Extraction,
    Options,
    Reader,
    VerifyError,
    failed,
    run_checker,
)

pytestmark = [pytest.mark.slow, pytest.mark.chaos]


class System:
    """`watchlog up --detach --replicas R` on free ports (monitoring optional)."""

    def __init__(self, state: Path, replicas: int, *, simulate: bool, monitoring: bool) -> None:
        from rich.console import Console

        from watchlog.core.settings import Settings
        from watchlog.launcher.services import Ports
        from watchlog.launcher.stack import Stack

        free = free_redis_ports("127.0.0.1", 9)
        self.ports = Ports(*free)
        # The checker, a pager and a drainer share the reader key: more than the default
        # 50 requests a second for one credential, which is not what is tested here.
        settings = Settings.from_env({"WATCHLOG_PRODUCER_PORT": str(free[0]),
                                      "WATCHLOG_CONSUMER_PORT": str(free[1]),
                                      "WATCHLOG_CONSUMER_RATE_LIMIT": "2000/second"})
        self.state = state
        self.producer = f"http://127.0.0.1:{free[0]}"
        self.consumer = f"http://127.0.0.1:{free[1]}"
        self.prometheus = f"http://127.0.0.1:{self.ports.prometheus}"
        self.stack = Stack(settings, state, replicas=replicas, simulate=simulate,
                           monitoring=monitoring, redis_port=None,
                           ports=self.ports,
                           console=Console(file=open(os.devnull, "w")))  # noqa: SIM115

    def __enter__(self) -> System:
        self.stack.up(detach=True)
        from watchlog.core.credentials import load_or_create

        self.creds = load_or_create(self.state)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.down()

    @property
    def cluster(self) -> Any:
        from watchlog.launcher.redis.cluster import LocalCluster

        return LocalCluster.recorded(self.state)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "watchlog", "cluster", *args, "--state-dir", str(self.state)],
            capture_output=True, text=True, timeout=240, check=False)


class CountingReader(Reader):
    """The checker's reader, but every error it meets is kept (then retried as before)."""

    def __init__(self, url: str, token: str, errors: list[str]) -> None:
        super().__init__(url, token, deadline=60.0)
        self.errors = errors

    def call(self, method: str, path: str, **kw: Any) -> Any:
        while True:
            try:
                r = self.http.request(method, path, **kw)
                if r.status_code < 400:
                    return r.json()
                self.errors.append(f"{method} {path}: HTTP {r.status_code} {r.text[:120]}")
            except httpx.TransportError as e:
                self.errors.append(f"{method} {path}: {type(e).__name__}")
            if len(self.errors) > 50:
                raise RuntimeError(f"too many errors: {self.errors[:3]}")
            time.sleep(0.3)


class Bystanders:
    """A reader paging and an extractor draining while the cluster changes shape."""

    def __init__(self, system: System) -> None:
        self.errors: list[str] = []
        self.reader = CountingReader(system.consumer, system.creds.reader_key, self.errors)
        self.extraction = Extraction(self.reader, "scaling")
        self.stop = threading.Event()
        self.pages = self.batches = 0
        self.threads = [threading.Thread(target=self._page, daemon=True),
                        threading.Thread(target=self._drain, daemon=True)]

    def __enter__(self) -> Bystanders:
        self.extraction.create()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        self.reader.close()

    def _page(self) -> None:
        http = httpx.Client(base_url=self.reader.http.base_url, timeout=30,
                            headers=self.reader.http.headers)
        user = 0
        while not self.stop.is_set():
            user = (user + 1) % 50
            params: dict[str, Any] = {"limit": 25}
            for _ in range(20):
                try:
                    r = http.get(f"/v1/users/{user}/activities", params=params)
                except httpx.TransportError as e:
                    self.errors.append(f"page: {type(e).__name__}")
                    break
                if r.status_code != 200:
                    self.errors.append(f"page: HTTP {r.status_code} {r.text[:120]}")
                    break
                self.pages += 1
                cursor = r.json().get("next_cursor")
                if not cursor:
                    break
                params["cursor"] = cursor
        http.close()

    def _drain(self) -> None:
        while not self.stop.is_set():
            doc = self.reader.call("POST", "/v1/extractors/scaling/batches",
                                   params={"max": 200, "consumer": "scaling",
                                           "visibility_timeout": 5})
            if doc["items"]:
                self.extraction._take(doc["items"])  # noqa: SLF001 - acks each batch
                self.batches += 1
            else:
                time.sleep(0.2)


@pytest.fixture
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scaling")


def grow_shrink(system: System, count: int = 1500) -> tuple[dict[str, Any], Bystanders]:
    """Run the checker with the grow-shrink nemesis while the bystanders read and drain."""
    opts = Options(producer_url=system.producer, consumer_url=system.consumer,
                   state_dir=system.state, nemesis="grow-shrink", count=count, duration=10,
                   heal_timeout=60)
    tokens = {"ingest": system.creds.ingest_token, "reader": system.creds.reader_key}
    with Bystanders(system) as bystanders:
        result = run_checker(opts, tokens)
        end = time.monotonic() + 30
        while time.monotonic() < end and len(run_ids(bystanders, result)) < result["attempted"]:
            time.sleep(0.3)
    return result, bystanders


def run_ids(bystanders: Bystanders, result: dict[str, Any]) -> set[str]:
    """The checker's logs the bystanding extractor delivered."""
    return {i for i in bystanders.extraction.event_ids if i.startswith(result["run"] + "-")}


@pytest.mark.parametrize("replicas", [0, 1], ids=["no-replicas", "replicas"])
def test_grow_and_shrink_under_load_no_error_reaches_a_client_and_nothing_is_lost(
        state: Path, replicas: int) -> None:
    with System(state, replicas, simulate=True, monitoring=False) as system:
        masters = len(system.cluster.ports) // (1 + replicas)
        result, bystanders = grow_shrink(system)
        notes = "\n".join(result["nemesis_log"])
        assert not failed(result), (failed(result), result)
        assert result["errors"] == {}, result["errors"]
        assert result["acknowledged"] == result["attempted"]
        assert notes.count("[16/16]") == 2, notes  # 16 partitions moved there and back
        assert bystanders.errors == [], bystanders.errors[:5]
        assert bystanders.pages > 0 and bystanders.batches > 0
        assert bystanders.extraction.redelivered_after_ack == 0
        # Drained while the partitions moved: every log the checker sent, none skipped.
        assert len(run_ids(bystanders, result)) == result["attempted"]
        cluster = system.cluster
        assert len(cluster.ports) == masters * (1 + replicas)  # the new nodes retired
        for name in ("simulator.log", "extractor.log"):
            log = (state / "logs" / name).read_text()
            assert " 503" not in log and "unavailable" not in log, log[-2000:]


def test_grow_with_partitions_handed_over_without_their_keys_loses_logs(
        state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: the grow hands partitions over the naive way, keys left behind.

    The new master claims the slots with a newer config epoch (no IMPORTING/MIGRATING, no
    MIGRATE): the old owner learns it lost them and drops their keys. The shrink back then
    moves properly, so the run heals and the checker reads back what is left.
    """
    real = scale.Mover.move_slots
    originals: set[str] = set()

    def naive_to_new(self: scale.Mover, slots: list[int], src: scale.Node, dst: scale.Node,
                     view: dict[str, scale.Node], resuming: bool = False) -> None:
        if dst.node_id in originals:
            return real(self, slots, src, dst, view, resuming)
        target = self.admin.client(dst.addr)
        for s in slots:
            target.execute_command("CLUSTER", "SETSLOT", s, "NODE", dst.node_id)
        target.execute_command("CLUSTER", "BUMPEPOCH")
        return None

    ledgers: list[verify.Ledger] = []

    class KeptLedger(verify.Ledger):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            ledgers.append(self)

    with System(state, 0, simulate=False, monitoring=False) as system:
        admin = scale.local_admin(system.cluster)
        originals.update(n.node_id for n in admin.view().values() if n.is_master)
        monkeypatch.setattr(scale.Mover, "move_slots", naive_to_new)
        monkeypatch.setattr(verify, "Ledger", KeptLedger)
        day = datetime.now(UTC).date() - timedelta(days=2)
        opts = Options(producer_url=system.producer, consumer_url=system.consumer,
                       state_dir=system.state, nemesis="grow-shrink", count=1500, duration=8,
                       heal_timeout=30, day=day)
        tokens = {"ingest": system.creds.ingest_token, "reader": system.creds.reader_key}
        try:
            result = run_checker(opts, tokens)
            lost = result["lost"]
            assert "lost" in failed(result), result
        except VerifyError as e:
            # The keys left behind include the feeds' consumer groups, so the checker's own
            # extractor is gone before it reads back (no verdict: exit 2, not a pass). The
            # same ledger, against the export, counts what was lost.
            assert "does not exist" in str(e), e
            reader = Reader(system.consumer, system.creds.reader_key)
            frm = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
            exported = {str(d["event_id"]) for d in reader.export(frm, frm + 86_400_000 - 1)}
            reader.close()
            lost = len(ledgers[0].acked - exported)
        print(f"control: lost {lost} of {len(ledgers[0].acked)} acknowledged logs")
        assert lost > 0


def shares(cluster: Any) -> dict[int, float]:
    """Each master's share of the keys (DBSIZE)."""
    sizes = {}
    for node in scale.local_admin(cluster).live(scale.local_admin(cluster).view()):
        if node.is_master:
            sizes[node.port] = cluster.node_client(node.port).dbsize()
    total = sum(sizes.values())
    return {p: n / total for p, n in sizes.items()}


def ingest_users(system: System, users: int = 1000) -> None:
    from helpers import seed_log

    headers = {"Authorization": f"Bearer {system.creds.ingest_token}"}
    with httpx.Client(timeout=30) as http:
        docs = [seed_log(user_id=u, event_id=f"spread-{u}") for u in range(users)]
        for i in range(0, users, 500):
            r = http.post(system.producer + "/v1/activities", json=docs[i:i + 500],
                          headers=headers)
            assert r.status_code == 200, r.text


def test_grow_interrupted_then_rebalanced_gives_four_masters_an_equal_share_and_prometheus_sees_them(  # noqa: E501
        state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from watchlog.core import keys

    with System(state, 0, simulate=False, monitoring=True) as system:
        ingest_users(system)
        before = system.cluster
        keys_before = sum(before.node_client(p).dbsize() for p in before.ports)
        dry = system.cli("add", "--masters", "1", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "16 partitions to move" in dry.stdout, dry.stdout

        def targets() -> set[str]:
            r = httpx.get(system.prometheus + "/api/v1/targets").json()
            return {t["labels"]["instance"] for t in r["data"]["activeTargets"]
                    if t["labels"].get("job") == "redis"}

        def prometheus_pid() -> int:
            record = json.loads((state / "pids.json").read_text())
            return next(e["pid"] for e in record["services"] if e["component"] == "prometheus")

        pid = prometheus_pid()
        new_node = f"127.0.0.1:{scale._next_ports(before, 1)[0]}"  # noqa: SLF001
        assert new_node not in targets()  # the check below can fail: not scraped before

        # Two cluster clients that know only the 3 masters: the store's, and redis-py's own.
        from watchlog.core.settings import Settings
        from watchlog.store.cluster import connect

        app_env = {**system.creds.app_env(), "WATCHLOG_REDIS_URL": before.startup_urls}
        store_rc = connect(Settings.from_env(app_env))
        plain_rc = redis.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(
            "127.0.0.1", p) for p in before.ports], username="watchlog",
            password=system.creds.redis_app_password)

        # Interrupted in the middle of its first keyed slot: left MIGRATING/IMPORTING.
        calls = {"n": 0}
        real = scale.Mover._migrate_keys

        def interrupted(self: scale.Mover, *a: Any) -> int:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return real(self, *a)

        monkeypatch.setattr(scale.Mover, "_migrate_keys", interrupted)
        with pytest.raises(KeyboardInterrupt):
            scale.add_masters(system.cluster, state, 1, progress=lambda _: None)
        monkeypatch.undo()
        cluster = system.cluster
        assert len(cluster.ports) == 4
        half = scale.Mover(scale.local_admin(cluster)).half_moved()
        assert half, "the interruption left no slot half-moved"
        # The control: a grow stopped before its moves leaves the new master short.
        assert min(shares(cluster).values()) < 0.18

        # A key of a half-moved partition that is not on the old owner: ASK, to a master no
        # slot map of these clients lists. The store's client follows it (its pipelines
        # too: the extractor's reads); redis-py 8.1 alone fails with AttributeError (a 500).
        tag = keys.TAGS[half[0][0] // scale.PARTITION_SLOTS]
        probe = f"wl:{{{tag}}}:absent"
        pipe = store_rc.pipeline(transaction=False)
        pipe.exists(probe)
        assert pipe.execute(raise_on_error=False) == [0]
        plain = plain_rc.pipeline(transaction=False)
        plain.exists(probe)
        with pytest.raises(AttributeError):
            plain.execute(raise_on_error=False)
        store_rc.close()
        plain_rc.close()

        again = system.cli("rebalance")
        assert again.returncode == 0, again.stderr
        assert "finishing" in again.stdout and "done:" in again.stdout, again.stdout
        assert scale.Mover(scale.local_admin(cluster)).half_moved() == []
        share = shares(cluster)
        assert len(share) == 4
        assert all(0.18 <= s <= 0.32 for s in share.values()), share
        assert sum(cluster.node_client(p).dbsize() for p in cluster.ports) == keys_before
        plan = system.cli("rebalance", "--dry-run")
        assert "0 partitions to move" in plan.stdout, plan.stdout

        # Prometheus was reloaded (not restarted) and scrapes the new node through the
        # exporter, which knows its password.
        new = f"127.0.0.1:{max(cluster.ports)}"
        up = None
        end = time.monotonic() + 60
        while time.monotonic() < end:
            r = httpx.get(system.prometheus + "/api/v1/query",
                          params={"query": f'redis_up{{instance="{new}"}}'}).json()
            found = r["data"]["result"]
            if found and found[0]["value"][1] == "1":
                up = found
                break
            time.sleep(1)
        assert up, f"Prometheus does not see {new} up"
        assert new == new_node and new in targets()
        assert prometheus_pid() == pid  # reloaded (SIGHUP), not restarted

        status = subprocess.run([sys.executable, "-m", "watchlog", "status", "--state-dir",
                                 str(state)], capture_output=True, text=True, timeout=60,
                                check=False)
        assert f"redis-{max(cluster.ports)}" in status.stdout

        # Shrink back: the node is drained, retired and forgotten.
        gone = system.cli("remove", str(max(cluster.ports)))
        assert gone.returncode == 0, gone.stderr
        cluster = system.cluster
        assert len(cluster.ports) == 3
        assert sum(cluster.node_client(p).dbsize() for p in cluster.ports) == keys_before
        assert all(0.25 <= s <= 0.42 for s in shares(cluster).values())


def test_cluster_commands_refuse_what_cannot_be_done_and_an_add_stopped_early_leaves_nothing(
        state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from watchlog.launcher.redis.cluster import LocalCluster

    with System(state, 0, simulate=False, monitoring=False) as system:
        r = system.cli("add", "--masters", "1", "--replicas", "1", "--dry-run")
        assert r.returncode != 0 and "0 replicas per master" in r.stderr
        assert "run the same command" not in r.stderr  # a refusal: a rerun does the same
        r = system.cli("remove", "1")
        assert r.returncode == 1 and "not part of this cluster" in r.stderr, r

        # Ctrl-C while the new node meets the others: it is forgotten, stopped and removed.
        ports = list(system.cluster.ports)

        def interrupted(self: LocalCluster, deadline: float) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(LocalCluster, "_wait_all_known", interrupted)
        with pytest.raises(KeyboardInterrupt):
            scale.add_masters(system.cluster, state, 1, progress=lambda _: None)
        monkeypatch.undo()
        cluster = system.cluster
        assert cluster.ports == ports
        assert sorted(p.name for p in (state / "redis").iterdir() if p.is_dir()) == sorted(
            map(str, ports))
        cluster.wait_ok(time.monotonic() + 30)  # no stranger left in the node table


# A `watchlog cluster` run whose key moves pause 3 s (announced on stdout), so that a signal
# lands while a partition is half-moved; DEFER_SIGNALS=False is the negative control.
SLOW_RUN = """
import signal, sys, time
# Python leaves SIGINT ignored when it starts ignored (a shell's background job): the
# negative control below needs Ctrl-C's usual KeyboardInterrupt whatever started the suite.
signal.signal(signal.SIGINT, signal.default_int_handler)
from watchlog.launcher.redis import scale
scale.DEFER_SIGNALS = {defer}
real = scale.Mover._migrate_keys
def slow(self, source, dst, slot):
    print("migrating slot", slot, flush=True)
    time.sleep(3)
    return real(self, source, dst, slot)
scale.Mover._migrate_keys = slow
sys.argv = ["watchlog", "cluster", *sys.argv[1:]]
from watchlog.cli.main import main
main()
"""


def signalled(argv: list[str], until: str, signum: int) -> tuple[int, str, str]:
    """Start ``argv``, send ``signum`` right after it prints a line starting with ``until``."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen = []
    timer = threading.Timer(180, proc.kill)  # bounded: a run that never prints it dies
    timer.start()
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(until):
                proc.send_signal(signum)
                break
        out, err = proc.communicate(timeout=180)
    finally:
        timer.cancel()
    return proc.returncode, "".join(seen) + out, err


def test_signals_stop_a_run_between_partitions_and_only_a_killed_run_leaves_one_half_moved(
        state: Path) -> None:
    import signal

    with System(state, 1, simulate=False, monitoring=False) as system:
        ingest_users(system)
        half = lambda: scale.Mover(scale.local_admin(system.cluster)).half_moved()  # noqa: E731
        cli = [sys.executable, "-m", "watchlog", "cluster"]
        where = ["--state-dir", str(state)]

        # Ctrl-C right after the first partition moved: the next one is finished, then exit
        # 130, pointing at rebalance (not at `add` again: that would start another master).
        rc, out, err = signalled([*cli, "add", "--masters", "1", *where], "[", signal.SIGINT)
        assert rc == 130, (out, err)
        assert "[16/16]" not in out and "run `watchlog cluster rebalance` to finish" in out
        assert "Exception ignored" not in err and "Traceback" not in err, err
        assert half() == []

        slow = [sys.executable, "-c"]
        # The control: SIGKILL while a partition's keys move leaves it half-moved.
        rc, out, err = signalled([*slow, SLOW_RUN.format(defer=True), "rebalance", *where],
                                 "migrating slot", signal.SIGKILL)
        assert rc == -signal.SIGKILL
        stuck = half()
        assert stuck, out
        dry = system.cli("rebalance", "--dry-run")
        assert f"finish {len(stuck)} slots an interrupted run left half-moved" in dry.stdout
        assert half() == stuck  # the dry run moved nothing

        # SIGINT at the same point: the half-moved partition is finished, then exit 130.
        rc, out, err = signalled([*slow, SLOW_RUN.format(defer=True), "rebalance", *where],
                                 "migrating slot", signal.SIGINT)
        assert rc == 130 and "finishing" in out and "none left half-moved" in out, (out, err)
        assert half() == []
        # The same with the handler off (the negative control): SIGINT leaves it half-moved.
        rc, out, err = signalled([*slow, SLOW_RUN.format(defer=False), "rebalance", *where],
                                 "migrating slot", signal.SIGINT)
        assert rc == 130, (out, err)
        assert half(), out

        done = system.cli("rebalance")
        assert done.returncode == 0 and "done:" in done.stdout, done.stdout + done.stderr
        assert half() == []
        admin = scale.local_admin(system.cluster)
        masters = [n for n in admin.live(admin.view()) if n.is_master]
        assert len(masters) == 4 and all(n.slots for n in masters)

        # A master's only replica, when writes wait for one: refused, dry run included.
        view = admin.view()
        master = masters[0]
        replica = next(n for n in view.values() if n.master_id == master.node_id)
        for dry_run in (["--dry-run"], []):
            r = system.cli("remove", str(replica.port), *dry_run)
            assert r.returncode == 1 and "only replica" in r.stderr, r
            assert "run the same command" not in r.stderr
        assert replica.port in system.cluster.ports
        # --force removes it, and the master then refuses writes (what the refusal is for).
        r = system.cli("remove", str(replica.port), "--force")
        assert r.returncode == 0, r
        assert replica.port not in system.cluster.ports
        tag = keys_tag(master)
        client = admin.client(master.addr)
        end = time.monotonic() + 20
        refused = None
        while time.monotonic() < end and refused is None:
            try:
                client.set(f"wl:{{{tag}}}:probe", "1")
                time.sleep(0.5)
            except redis.ResponseError as e:
                refused = str(e)
        assert refused is not None and "NOREPLICAS" in refused, refused


def keys_tag(master: scale.Node) -> str:
    """The hash tag of a partition whose keys ``master`` holds."""
    from watchlog.core import keys

    p = next(p for p in range(keys.PARTITIONS) if p * scale.PARTITION_SLOTS in master.slots)
    return keys.TAGS[p]


def test_plan_evens_partitions_and_aligns_strays() -> None:
    """The planner alone, on hand-made views (no Redis)."""
    def node(i: int, slots: range | list[int]) -> scale.Node:
        return scale.Node(f"id{i}", f"127.0.0.1:{7000 + i}", frozenset({"master"}), "-",
                          "connected", frozenset(slots))

    bounds = [0, 5461, 10923, 16384]  # what `redis-cli --cluster create` gives 3 masters
    view = {f"id{i}": node(i, range(bounds[i], bounds[i + 1])) for i in range(3)}
    view["id3"] = node(3, [])
    p = scale.plan(view, ["id0", "id1", "id2", "id3"])
    assert sorted(p.after.values()) == [16, 16, 16, 16]
    assert sum(m.whole for m in p.moves) == 16
    assert not any(m.whole for m in p.moves if m.target != "id3")
    drained = scale.plan(view, ["id0", "id1", "id2"])
    assert sorted(drained.after.values(), reverse=True)[:3] == [22, 21, 21]
    assert scale.plan(view, ["id0", "id1", "id2"]).after.get("id3", 0) == 0


# -- compose: nodes 7-8 joined and rebalanced by redis-cluster-init --------------------------


def compose_init(masters: list[int], extra: list[int], rebalance: bool, dry_run: bool = False,
                 timeout: int = 90) -> subprocess.CompletedProcess[str]:
    """docker/redis/cluster-init.sh as compose's redis-cluster-init runs it (local nodes)."""
    from helpers import REDIS_DIR, REDIS_PASSWORDS, ROOT, clean_env
    from helpers import run_command as run

    env = {**clean_env(), "REDISCLI_AUTH": REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"],
           "REDIS_MASTERS": " ".join(f"127.0.0.1:{p}" for p in masters),
           "REDIS_REPLICAS": "",
           "REDIS_EXTRA_MASTERS": " ".join(f"127.0.0.1:{p}" for p in extra),
           "REDIS_REBALANCE": "yes" if rebalance else "no",
           "REDIS_REBALANCE_DRY_RUN": "yes" if dry_run else "no",
           "REDIS_REBALANCE_SCRIPT": str(REDIS_DIR / "rebalance.sh"),
           "REDIS_INIT_TIMEOUT": str(timeout),
           "REDIS_FUNCTIONS": str(ROOT / "src/watchlog/store/lua/library.lua")}
    return run("sh", str(REDIS_DIR / "cluster-init.sh"), env=env, timeout=timeout + 120)


def test_compose_init_joins_nodes_7_8_and_rebalances_by_partition(tmp_path: Path) -> None:
    from helpers import REDIS_PASSWORDS, Nodes, free_ports
    from watchlog.core import keys

    nodes = Nodes(tmp_path)
    ports = free_ports(5)
    try:
        for i, port in enumerate(ports):
            nodes.start(i, port)
        masters, extra = ports[:3], ports[3:]
        compose_init(masters, [], rebalance=False)
        admin = scale.Admin([f"127.0.0.1:{masters[0]}"], "admin",
                            REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"])
        rc = redis.RedisCluster("127.0.0.1", masters[0], username="admin",
                                password=REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"],
                                decode_responses=True)
        for p in range(keys.PARTITIONS):
            for k in range(5):
                rc.set(f"wl:{{{keys.TAGS[p]}}}:probe:{k}", f"{p}-{k}")
        rc.close()

        # `docker compose --profile scale up` without REDIS_REBALANCE: the nodes join, empty.
        joined = compose_init(masters, extra, rebalance=False)
        assert joined.stderr.count("as an empty master") == 2, joined.stderr
        view = admin.view()
        assert sum(1 for n in view.values() if n.is_master) == 5
        assert len(scale.plan(view, [n.node_id for n in view.values() if n.is_master]).moves) > 0

        dry = compose_init(masters, extra, rebalance=True, dry_run=True)
        assert "move partition" in dry.stderr and "rebalance: done" not in dry.stderr
        assert scale.plan(admin.view(), [n.node_id for n in admin.view().values()
                                         if n.is_master]).moves  # nothing moved

        # REDIS_REBALANCE=yes: the same rebalance as `watchlog cluster rebalance`.
        done = compose_init(masters, extra, rebalance=True)
        assert "partitions to move" in done.stderr and "rebalance: done" in done.stderr, \
            done.stderr
        view = admin.view()
        the_plan = scale.plan(view, [n.node_id for n in view.values() if n.is_master])
        assert the_plan.moves == []  # what the Python planner would do is done
        assert sorted(the_plan.after.values()) == [12, 13, 13, 13, 13]
        values = {}
        for node in view.values():
            client = admin.client(node.addr)
            for key in client.keys("wl:*:probe:*"):
                values[key] = client.get(key)
        assert len(values) == keys.PARTITIONS * 5  # every key moved, none lost
        again = compose_init(masters, extra, rebalance=True)
        assert "0 partitions to move" in again.stderr, again.stderr
        # `watchlog cluster rebalance --node` (the Python rebalance) agrees: nothing to do.
        py = subprocess.run(
            [sys.executable, "-m", "watchlog", "cluster", "rebalance", "--dry-run",
             "--node", f"127.0.0.1:{masters[0]}"], capture_output=True, text=True, timeout=60,
            env={**os.environ, "WATCHLOG_REDIS_ADMIN_PASSWORD":
                 REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"]}, check=False)
        assert py.returncode == 0 and "0 partitions to move" in py.stdout, py.stdout + py.stderr
    finally:
        nodes.stop_all()
