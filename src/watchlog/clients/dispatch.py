"""The simulator's request plumbing: pace the fleet's logs into requests for its senders.

The ``Dispatcher`` (the main thread) asks the ``Fleet`` for logs at the planned rate and
queues them as requests (``Unit``: one log, or a batch); a call a watch dropped waits in
``Deferred`` until it is due again. ``Plan`` holds what ``watchlog simulate`` was asked.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from watchlog.clients.fleet import Fleet, LogDoc

T = TypeVar("T")


class Deferred(Generic[T]):
    """Calls the watches dropped, to be made again when due (earliest first, thread-safe)."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, T]] = []
        self.seq = itertools.count()
        self.lock = threading.Lock()

    def add(self, due: float, item: T) -> None:
        with self.lock:
            heapq.heappush(self.heap, (due, next(self.seq), item))

    def due(self, now: float) -> list[T]:
        """Remove and return every call due by ``now``."""
        with self.lock:
            out = []
            while self.heap and self.heap[0][0] <= now:
                out.append(heapq.heappop(self.heap)[2])
            return out

    def __len__(self) -> int:
        return len(self.heap)


@dataclass
class Unit:
    """One request's worth of logs; ``dropped`` once the watch has dropped it."""

    events: list[LogDoc]
    single: bool
    dropped: bool = False


@dataclass(frozen=True)
class Plan:
    """What to simulate: the command's options."""

    url: str
    users: int = 100
    rate: float = 0.1  # logs/s; 0: as fast as the producer takes them
    batch: int = 1
    gzip: bool = True
    count: int | None = None
    duration: float | None = None  # s
    random_seed: int | None = None
    concurrency: int = 4
    drop_rate: float = 0.0
    offline_rate: float = 0.0
    ack_log: str | None = None


class Dispatcher:
    """Generate logs at the planned rate and queue them as requests (the main thread)."""

    def __init__(self, plan: Plan, fleet: Fleet, q: queue.Queue[Unit | None],
                 deferred: Deferred[Unit], stop: threading.Event, abort: threading.Event,
                 tick: Callable[[], None]) -> None:
        self.plan, self.fleet, self.q, self.deferred = plan, fleet, q, deferred
        self.stop, self.abort, self.tick = stop, abort, tick

    def run(self) -> None:
        """Generate until the count, the duration or a signal; then deliver what is held."""
        start = next_t = time.monotonic()
        while not (self.stop.is_set() or self.abort.is_set() or self._done(start)):
            n = self.plan.batch
            if self.plan.count is not None:
                n = min(n, self.plan.count - self.fleet.generated)
            self.enqueue(self.fleet.generate(n))
            next_t += n / self.plan.rate if self.plan.rate else 0
            self.idle(min(next_t, start + (self.plan.duration or float("inf"))))
        self.enqueue(self.fleet.drain())
        # unfinished_tasks before the deferred: a sender defers a unit before task_done()
        while not self.abort.is_set() and (self.q.unfinished_tasks or len(self.deferred)):
            self.idle(time.monotonic() + 0.05)

    def _done(self, start: float) -> bool:
        p = self.plan
        return (p.count is not None and self.fleet.generated >= p.count) or (
            p.duration is not None and time.monotonic() - start >= p.duration)

    def idle(self, until: float) -> None:
        """Until ``until``, requeue dropped calls when due and tick the status."""
        while True:
            self.put_all(self.deferred.due(time.monotonic()))
            self.tick()
            left = until - time.monotonic()
            if left <= 0 or self.stop.wait(min(left, 0.25)) or self.abort.is_set():
                return

    def enqueue(self, events: list[LogDoc]) -> None:
        size, single = self.plan.batch, self.plan.batch == 1
        self.put_all([Unit(events[i:i + size], single) for i in range(0, len(events), size)])

    def put_all(self, units: list[Unit]) -> None:
        for unit in units:
            while not self.abort.is_set():
                try:
                    self.q.put(unit, timeout=0.25)
                    break
                except queue.Full:
                    self.tick()
