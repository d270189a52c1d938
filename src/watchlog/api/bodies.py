"""Bounded request bodies and streamed responses: slow clients cannot hold request threads.

Neither WSGI server bounds the time a body takes to arrive: granian's ``wsgi.input.read``
blocks its request thread inside Rust until the bytes come (it has only a header-read
timeout), gunicorn's gthread worker reads a blocking socket without a timeout. Eight
clients sending one byte a second held all four request threads of an API.

So ``wsgi.input`` is wrapped: each read runs on a parked reader thread while the request
thread waits for it with a deadline, ``WATCHLOG_BODY_TIMEOUT`` for the whole body and, after
``GRACE_S``, at least ``WATCHLOG_BODY_MIN_RATE`` bytes/s on average. A piece that has not
come within ``FAST_S`` is slow: only half the request threads may wait for slow pieces at
once (503 past that), so the others keep serving requests whose bodies come at once. Past
the deadline the request answers 408 and its thread serves the next request. The reader
stays blocked until the client sends its piece or goes (granian gives no way to cut a
connection from Python; under gunicorn the socket's read side is shut, which frees it at
once); readers hold no GIL while blocked and at most ``MAX_READERS`` per process exist (503
past that). The hand-off is the price of a time bound under granian: ~40-80 µs of CPU per
request on a loaded 2-core VM, ~6 µs on an idle core (docs/security.md, "Slow clients").

Streamed responses (export): at most half the request threads stream at once
(``StreamSlots``), and a stream stops after ``WATCHLOG_SEND_TIMEOUT`` (``send_within``).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from wsgiref.types import InputStream, StartResponse, WSGIApplication, WSGIEnvironment

from watchlog.core.errors import Busy, RequestTimeout

GRACE_S = 2.0  # a body's first bytes may take this long before the minimum rate applies
MAX_READERS = 64  # reader threads per process, busy or parked behind a slow client
PIECE = 1024  # the first read of a body, bytes
FAST_S = 0.05  # a piece that takes longer is slow: it needs a slow slot to be waited for


class _Job:
    __slots__ = ("fn", "size", "done", "data", "error")

    def __init__(self, fn: Callable[[int], bytes], size: int) -> None:
        self.fn, self.size = fn, size
        self.done = threading.Lock()
        self.done.acquire()
        self.data: bytes = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        """Read; the caller then releases ``done`` (after parking the reader again)."""
        try:
            self.data = self.fn(self.size)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting request thread
            self.error = e


class Readers:
    """Parked threads that perform blocking body reads for the request threads.

    ``slow`` counts the request threads that may wait for a slow body at once (half of
    them): the others keep serving requests whose bodies come at once, whatever the
    number of slow clients.
    """

    def __init__(self, limit: int = MAX_READERS, slow: int = 1) -> None:
        self.limit = limit
        self.slow_slots = slow
        self.slow = threading.BoundedSemaphore(slow)
        self.idle: deque[queue.SimpleQueue[_Job]] = deque()
        self.count = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[int], bytes], size: int) -> _Job:
        job = _Job(fn, size)
        try:
            inbox = self.idle.pop()
        except IndexError:
            inbox = self._spawn()
        inbox.put(job)
        return job

    def _spawn(self) -> queue.SimpleQueue[_Job]:
        with self._lock:
            if self.count >= self.limit:
                raise Busy(f"{self.limit} request bodies are being received; retry",
                           retry_after=1)
            self.count += 1
        inbox: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        threading.Thread(target=self._serve, args=(inbox,), daemon=True,
                         name="watchlog-body-reader").start()
        return inbox

    def _serve(self, inbox: queue.SimpleQueue[_Job]) -> None:
        while True:
            job = inbox.get()
            job.run()
            # Parked again before the request thread wakes: its next read (or the next
            # request's) finds this reader idle instead of starting another thread.
            self.idle.append(inbox)
            job.done.release()


class TimedInput:
    """``wsgi.input`` whose reads give up at the body's deadline (``RequestTimeout``)."""

    def __init__(self, raw: InputStream, readers: Readers, timeout: float, min_rate: int,
                 sock: socket.socket | None = None) -> None:
        self.raw, self.readers, self.sock = raw, readers, sock
        self.timeout, self.min_rate = timeout, min_rate
        self.started = 0.0
        self.received = 0
        self.failed = False

    def read(self, size: int | None = -1) -> bytes:
        """Return up to ``size`` bytes (fewer only at the end of the body)."""
        if self.failed:
            raise RequestTimeout("request body: the client was too slow")
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 16), b""))
        if not self.started:
            self.started = time.monotonic()
        # The server's read blocks until all of ``size`` has come, and a reader left behind
        # a 408 stays blocked until its piece is complete: pieces start at 1 KiB (a single
        # log in one read) and double with what has come, so a slow client's last piece is
        # small and a fast client's 4 MiB body takes a dozen reads.
        parts = []
        while size > 0:
            want = min(size, max(PIECE, min(self.received, 1 << 16)))
            got = self._read(want)
            parts.append(got)
            size -= len(got)
            if len(got) < want:
                break  # the end of the body
        return b"".join(parts) if len(parts) != 1 else parts[0]

    def _read(self, size: int) -> bytes:
        job = self.readers.submit(self.raw.read, size)
        left = self._deadline(size) - time.monotonic()
        if not job.done.acquire(timeout=max(0.0, min(FAST_S, left))) and not self._wait(job, size):
            self.failed = True
            self._cut()
            raise RequestTimeout(
                f"request body: {self.received} bytes in {time.monotonic() - self.started:.0f}"
                f" s, under the bounds (WATCHLOG_BODY_TIMEOUT={self.timeout:g} s, "
                f"WATCHLOG_BODY_MIN_RATE={self.min_rate} bytes/s)")
        if job.error is not None:
            raise job.error
        self.received += len(job.data)
        return job.data

    def _wait(self, job: _Job, size: int) -> bool:
        """Wait for a slow piece in one of the few slow slots; False past the deadline."""
        if not self.readers.slow.acquire(blocking=False):
            self.failed = True
            self._cut()
            raise Busy(f"request body slower than {FAST_S:g} s while {self.readers.slow_slots} "
                       "slow bodies of this process are being received; retry", retry_after=1)
        try:
            return job.done.acquire(timeout=max(0.0, self._deadline(size) - time.monotonic()))
        finally:
            self.readers.slow.release()

    def _deadline(self, size: int) -> float:
        """The latest time this read may end: a client at the minimum rate ends sooner."""
        end = self.started + self.timeout if self.timeout > 0 else float("inf")
        if self.min_rate > 0:
            end = min(end, self.started + GRACE_S + (self.received + size) / self.min_rate)
        return end

    def _cut(self) -> None:
        """Unblock the reader now where the server lets us (gunicorn's socket)."""
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def readline(self, size: int | None = -1) -> bytes:  # WSGI asks for it; unused here
        raise OSError("readline is not supported on request bodies")

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.read(1 << 16), b"")


class BoundedBodies:
    """WSGI middleware installing ``TimedInput`` on every request that carries a body."""

    def __init__(self, wsgi_app: WSGIApplication, timeout: float, min_rate: int,
                 threads: int = 2) -> None:
        self.wsgi_app = wsgi_app
        self.timeout, self.min_rate = timeout, min_rate
        self.readers = Readers(slow=max(1, threads // 2))
        self.enabled = timeout > 0 or min_rate > 0

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        if self.enabled and (environ.get("CONTENT_LENGTH") not in (None, "", "0")
                             or "HTTP_TRANSFER_ENCODING" in environ):
            environ["wsgi.input"] = TimedInput(
                environ["wsgi.input"], self.readers, self.timeout, self.min_rate,
                environ.get("gunicorn.socket"))
        return self.wsgi_app(environ, start_response)


SEND_PIECE = 16384  # bytes handed to the server at a time by ``send_within``


class StreamSlots:
    """At most half the request threads of a process stream a response at once.

    A streamed response holds its thread until the client has read nearly all of it, and
    under granian a slow reader cannot be cut sooner than the buffers on the way drain:
    the other half of the threads always serves the short requests.
    """

    def __init__(self, threads: int) -> None:
        self.size = max(1, threads // 2)
        self.sem = threading.BoundedSemaphore(self.size)

    def take(self) -> Callable[[], None]:
        """Take a slot (503 ``Busy`` when none is free); return its release."""
        if not self.sem.acquire(blocking=False):
            raise Busy(f"{self.size} streamed responses of this process are being sent; retry",
                       retry_after=1)
        once = [self.sem.release]

        def release() -> None:  # idempotent: the stream's end and the server's close()
            with suppress(IndexError):
                once.pop()()

        return release


def send_within(chunks: Iterable[bytes], timeout: float, sock: socket.socket | None = None,
                done: Callable[[], None] | None = None) -> Iterator[bytes]:
    """Yield ``chunks`` until ``timeout`` seconds have passed, then cut the stream.

    The chunks go out in ``SEND_PIECE`` slices: granian writes a streamed response on the
    request thread and asks for the next slice only when the buffers on the way (~0.5 MB)
    have room, so the deadline is checked at every slice the client makes room for. Under
    gunicorn (``sock``) each write also carries the time left as its socket timeout: exact.
    ``done`` is called when the stream ends, however it ends.
    """
    deadline = time.monotonic() + timeout if timeout > 0 else float("inf")
    try:
        for chunk in chunks:
            for i in range(0, len(chunk), SEND_PIECE):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RequestTimeout(f"response: not sent within WATCHLOG_SEND_TIMEOUT="
                                         f"{timeout:g} s; stream cut")
                if sock is not None and timeout > 0:
                    sock.settimeout(left)
                yield chunk[i:i + SEND_PIECE] if len(chunk) > SEND_PIECE else chunk
    finally:
        if sock is not None and timeout > 0:
            sock.settimeout(None)
        if done is not None:
            done()
