"""The nemeses of ``watchlog chaos verify``: harm done to a running system during writes.

Each acts on the local cluster that ``watchlog up`` recorded in the state directory (or,
for ``faults``, on the producer through ``/admin/faults``), runs in a thread while the
checker writes, notes what it did and when, and leaves the system able to heal: every
node it stopped is started again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import redis

from watchlog.core.errors import VerifyError
from watchlog.launcher.redis.nodes import NodeEntry, parse_nodes
from watchlog.launcher.verify import (
    FAULTS,
    Doc,
    Options,
    extractor_process,
    stop_process,
)

if TYPE_CHECKING:  # imported when first used (a run without a cluster never loads it)
    from watchlog.launcher.redis.cluster import LocalCluster


class Harm:
    """Run one nemesis in a thread, then heal; remember its notes and time window."""

    def __init__(self, opts: Options, tokens: dict[str, str], ext_name: str,
                 progress: Callable[[str], None]) -> None:
        self.opts, self.tokens, self.ext_name = opts, tokens, ext_name
        self.progress = progress
        self.notes: list[str] = []
        self.window: tuple[float, float] | None = None
        self.error: BaseException | None = None
        self._cluster: LocalCluster | None = None
        self._t0 = 0.0
        self._extract_dir: Path | None = None
        self._extractor: subprocess.Popen[bytes] | None = None

    # -- plumbing -------------------------------------------------------------------------

    @property
    def cluster(self) -> LocalCluster:
        if self._cluster is None:
            from watchlog.launcher.redis.cluster import LocalCluster

            self._cluster = LocalCluster.recorded(self.opts.state_dir)
        return self._cluster

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self._t0:5.1f} s  {text}"
        self.notes.append(line)
        self.progress(line)

    @contextmanager
    def running(self, delay: float) -> Iterator[None]:
        """Start the nemesis ``delay`` seconds into the block; wait for its end after it."""
        self._t0 = time.monotonic()
        act = getattr(self, "_" + self.opts.nemesis.replace("-", "_"))

        def body() -> None:
            time.sleep(delay)
            start = time.monotonic()
            try:
                act()
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                self.error = e
                self.note(f"nemesis failed: {e}")
            finally:
                self.window = (start, time.monotonic())

        thread = threading.Thread(target=body, name="nemesis", daemon=True)
        thread.start()
        try:
            yield
        finally:
            thread.join()
        if self.error is not None:
            raise VerifyError(f"nemesis {self.opts.nemesis}: {self.error}") from self.error

    def heal(self) -> None:
        """Wait until every node serves and both APIs are ready again."""
        deadline = time.monotonic() + self.opts.heal_timeout
        if self.opts.nemesis not in ("none", "faults", "kill-extractor"):
            self.cluster.wait_ok(deadline)
            while (why := self.disagreement()) is not None:
                if time.monotonic() > deadline:
                    raise VerifyError(f"the cluster did not heal: {why}")
                time.sleep(0.1)
        for url in (self.opts.producer_url, self.opts.consumer_url):
            while not _ready(url):
                if time.monotonic() > deadline:
                    raise VerifyError(f"{url} not ready {self.opts.heal_timeout:.0f} s after "
                                      "the nemesis")
                time.sleep(0.2)

    def close(self) -> None:
        if self._extractor is not None:
            stop_process(self._extractor, signal.SIGKILL)
        if self._extract_dir is not None:
            shutil.rmtree(self._extract_dir, ignore_errors=True)

    # -- the cluster as the live nodes see it ----------------------------------------------

    def view(self, skip: tuple[int, ...] = ()) -> dict[int, NodeEntry]:
        """CLUSTER NODES from the first live node not in ``skip`` (frozen nodes hang)."""
        for port in self.cluster.ports:
            if port in skip:
                continue
            try:
                text = self.cluster.node_client(port, timeout=1.0).execute_command(
                    "CLUSTER", "NODES")
            except redis.RedisError:
                continue
            return parse_nodes(text)
        return {}

    def pair(self) -> tuple[int, int]:
        """Return a live master that has a live replica, and that replica."""
        view = self.view()
        by_id = {e.node_id: p for p, e in view.items()}
        for port, e in sorted(view.items()):
            master = by_id.get(e.master_id)
            if ("slave" in e.flags and "fail" not in e.flags and master is not None
                    and "fail" not in view[master].flags):
                return master, port
        raise VerifyError("no master with a live replica: start with `watchlog up --replicas 1`")

    def masters(self) -> list[int]:
        return sorted(p for p, e in self.view().items()
                      if "master" in e.flags and "fail" not in e.flags and e.slots)

    def node_timeout_s(self) -> float:
        port = self.masters()[0]
        raw = self.cluster.node_client(port).execute_command(
            "CONFIG", "GET", "cluster-node-timeout")
        return int(raw[1] if isinstance(raw, list) else raw["cluster-node-timeout"]) / 1000

    def wait_for(self, what: str, test: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not test():
            if time.monotonic() > deadline:
                raise VerifyError(f"{what}: not within {timeout:.0f} s")
            time.sleep(0.1)
        self.note(what)

    def promoted(self, port: int, skip: tuple[int, ...]) -> bool:
        e = self.view(skip).get(port)
        return e is not None and "master" in e.flags and "fail" not in e.flags and e.slots > 0

    def flagged_failed(self, port: int, skip: tuple[int, ...]) -> bool:
        e = self.view(skip).get(port)
        return e is not None and "fail" in e.flags

    def signal(self, port: int, sig: int) -> int:
        pid = self.cluster.pid(port)
        if not pid:
            raise VerifyError(f"redis node {port} is not running")
        os.kill(pid, sig)
        return int(pid)

    # -- the nemeses ----------------------------------------------------------------------

    def _none(self) -> None:
        self.note("no harm")
        time.sleep(2)

    def _faults(self) -> None:
        url = self.opts.producer_url + "/admin/faults"
        headers = {"Authorization": f"Bearer {self.tokens['admin']}"}
        r = httpx.put(url, json=FAULTS, headers=headers, timeout=10)
        if r.status_code != 200:
            raise VerifyError(f"PUT /admin/faults: HTTP {r.status_code}: {r.text[:200]}")
        self.note("producer: 25 % injected 503s before and after commit, 20 % delays")
        try:
            time.sleep(5)
        finally:
            httpx.delete(url, headers=headers, timeout=10)
            time.sleep(1.1)  # every worker re-reads the spec each second
            self.note("producer faults reset")

    def failover_timeout(self) -> float:
        """Longest wait for a replica's promotion: ten node timeouts and ten seconds.

        Ask before the harm: a master killed or paused does not answer.
        """
        return 10 * self.node_timeout_s() + 10

    def replaced(self, master: int, replica: int, timeout: float, rejoins: str) -> None:
        """Wait until ``replica`` replaced ``master``, then start ``master`` again."""
        self.wait_for(f"replica {replica} promoted", lambda: self.promoted(replica, (master,)),
                      timeout)
        self.cluster.start_node(master)
        self.note(f"restarted {master}: it rejoins as {rejoins}")

    def _kill_master(self) -> None:
        master, replica = self.pair()
        timeout = self.failover_timeout()
        self.cluster.kill(master)
        self.note(f"SIGKILL master {master} (its replica is {replica})")
        self.replaced(master, replica, timeout, "a replica")

    def _freeze_replica(self) -> None:
        master, replica = self.pair()
        timeout = self.failover_timeout()
        pid = self.signal(replica, signal.SIGSTOP)
        self.note(f"SIGSTOP replica {replica} of master {master}")
        try:
            self.wait_for(f"replica {replica} flagged failed",
                          lambda: self.flagged_failed(replica, (replica,)), timeout)
            # The master drops the link, as repl-timeout or a full output buffer would in a
            # longer freeze: else the socket buffers would hand a short freeze's writes over.
            self.cluster.node_client(master).execute_command("CLIENT", "KILL", "TYPE",
                                                             "replica")
            self.note(f"master {master} dropped its link to the frozen replica")
            time.sleep(self.opts.hold)  # writes go on: the master has no live replica now
            self.cluster.kill(master)
            self.note(f"SIGKILL master {master}")
        finally:
            os.kill(pid, signal.SIGCONT)
            self.note(f"SIGCONT replica {replica}")
        self.replaced(master, replica, timeout, "a replica and resyncs")

    def _pause_master(self) -> None:
        master, replica = self.pair()
        timeout = self.failover_timeout()
        pid = self.signal(master, signal.SIGSTOP)
        self.note(f"SIGSTOP master {master} (its replica is {replica})")
        try:
            self.wait_for(f"replica {replica} promoted over the paused master",
                          lambda: self.promoted(replica, (master,)), timeout)
        finally:
            os.kill(pid, signal.SIGCONT)
            self.note(f"SIGCONT {master}: it finds itself replaced")

    def _reshard(self) -> None:
        """Move 8 partitions to another master and back, again and again, for 4 s.

        Each move returns once every node names the new owner (``LocalCluster.wait_settled``), and
        the next starts half a second later: moved back and forth as fast as they go, a
        slot can end up owned by no node, its keys deleted (Redis 7.0; docs/chaos.md).
        """
        src, dst = self.masters()[:2]
        slots = self.cluster.partition_slots(src, 8)
        self.note(f"moving 8 partitions ({len(slots)} slots) between {src} and {dst}")
        end, moves = time.monotonic() + 4, 0
        while time.monotonic() < end or moves % 2:
            a, b = (src, dst) if moves % 2 == 0 else (dst, src)
            self.cluster.reshard(a, b, slots)
            moves += 1
            time.sleep(0.5)
            if (why := self.disagreement()) is not None:
                raise VerifyError(f"after a move: {why}")
        self.note(f"moved them {moves} times; they are back on {src}")

    def _grow_shrink(self) -> None:
        """Add a master (with the cluster's replica count), then remove it again.

        What an operator does with ``watchlog cluster add --masters 1`` and ``watchlog
        cluster remove <port>``: 16 partitions move to the new master, then back.
        """
        from watchlog.launcher.redis import scale

        before = set(self.masters())
        self.note(f"growing from {len(before)} masters")
        scale.add_masters(self.cluster, self.opts.state_dir, 1, progress=self.note)
        new = sorted(set(self.masters()) - before)
        if len(new) != 1:
            raise VerifyError(f"expected one new master, found {new}")
        self.note(f"shrinking: removing {new[0]}")
        scale.remove_master(self.cluster, self.opts.state_dir, new[0], progress=self.note)

    def disagreement(self) -> str | None:
        """Return how the live nodes disagree on who owns which slot, or None."""
        owners: dict[str, set[int]] = {}
        for port in self.cluster.ports:
            try:
                text = self.cluster.node_client(port, timeout=1.0).execute_command(
                    "CLUSTER", "NODES")
            except redis.RedisError:
                continue
            if "[" in text:
                return f"node {port} has a slot importing or migrating"
            mine = {p: e.ranges for p, e in parse_nodes(text).items()
                    if "master" in e.flags and e.ranges}
            owners.setdefault(repr(sorted(mine.items())), set()).add(port)
        if len(owners) > 1:
            return "nodes disagree on slot owners: " + " / ".join(
                ",".join(map(str, sorted(ports))) for ports in owners.values())
        return None

    def _restart_all(self) -> None:
        self.note(f"stopping all {len(self.cluster.ports)} nodes")
        self.cluster.stop()
        self.note("every node stopped; starting them again")
        self.cluster.start(timeout=self.opts.heal_timeout)
        self.note("cluster serving again")

    def _kill_extractor(self) -> None:
        self._extract_dir = Path(tempfile.mkdtemp(prefix="watchlog-verify-"))
        out = self._extract_dir / "out"
        proc = self._extractor = self._start_extractor(out, follow=True)
        self.note(f"started `watchlog extract --follow` (pid {proc.pid})")
        self.wait_for("the extractor wrote a batch",
                      lambda: any(out.rglob("*.ndjson")) or proc.poll() is not None, 20)
        time.sleep(1)
        stop_process(proc, signal.SIGKILL)
        self.note(f"SIGKILL extractor pid {proc.pid}")
        proc = self._extractor = self._start_extractor(out, follow=True)
        self.note(f"started it again (pid {proc.pid})")
        time.sleep(2)

    def _start_extractor(self, out: Path, follow: bool) -> subprocess.Popen[bytes]:
        env = {**os.environ, "WATCHLOG_READER_KEY": self.tokens["reader"]}
        return extractor_process(self.opts.consumer_url, self.ext_name, out, env, follow)

    def extracted(self, want: set[str], timeout: float = 60.0) -> list[Doc]:
        """Let the followed extractor run until every id of ``want`` is on disk (or the
        timeout), stop it, and return every line it wrote."""
        import json

        assert self._extract_dir is not None
        out = self._extract_dir / "out"

        def lines() -> list[Doc]:
            return [json.loads(line) for f in sorted(out.rglob("*.ndjson"))
                    for line in f.read_text().splitlines() if line]

        deadline = time.monotonic() + timeout
        while not want <= {str(d["event_id"]) for d in lines()}:
            if time.monotonic() > deadline:
                break  # what never came is missing from this view
            if self._extractor is None or self._extractor.poll() is not None:
                self._extractor = self._start_extractor(out, follow=True)
            time.sleep(0.5)  # taken, never acknowledged: back after the visibility timeout
        if self._extractor is not None:
            stop_process(self._extractor)
            self._extractor = None
        return lines()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
