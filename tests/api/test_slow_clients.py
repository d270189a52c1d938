"""Issue 13 item 1: clients that send their body (or read a response) slowly cannot starve
an API. Proved against the API served as `watchlog up` serves it (granian by default, the
default 2 workers x 2 threads), with more slow clients than request threads.

Negative control: the same attack with the bounds off (WATCHLOG_BODY_TIMEOUT=0,
WATCHLOG_BODY_MIN_RATE=0) starves the normal requests.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from helpers import bearer, random_logs, seed_log, serve, service_env
from watchlog.core.credentials import Credentials
from watchlog.launcher.procs import free_redis_ports
from watchlog.launcher.redis.cluster import LocalCluster
from watchlog.launcher.services import Service

SLOW_CLIENTS = 8  # more than the 2 x 2 request threads
ATTACK_S = 8.0  # how long the slow clients keep trickling
NORMAL_TIMEOUT_S = 6.0  # a normal client's patience
EXPORT_THOUSANDS = 40  # logs in the export, thousands (~12 MB: 3 x what buffers hold)


def start(cluster: LocalCluster, credentials: Credentials, tmp: Path, service: str,
          **settings: str) -> tuple[Service, str]:
    port = free_redis_ports("127.0.0.1", 1)[0]
    env = {**service_env(cluster, credentials), "WATCHLOG_WORKERS": "2",
           "WATCHLOG_THREADS": "2", **settings}
    svc = serve(service, env, port, tmp, tmp / f"metrics-{service}")
    return svc, f"http://127.0.0.1:{port}"


class SlowSender(threading.Thread):
    """Send a POST's headers, then its body (100000 bytes: a batch; 300: one log, which the
    producer's lean path reads) one byte a second; when answered (or cut), note the answer
    and start again, until ``stop``."""

    def __init__(self, port: int, path: str, token: str, stop: threading.Event,
                 length: int = 100000) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.token, self.stop = port, path, token, stop
        self.length = length
        self.answers: list[bytes] = []

    def run(self) -> None:
        while not self.stop.is_set():
            with socket.create_connection(("127.0.0.1", self.port)) as s:
                first = "[" if self.length > 16384 else "{"
                s.sendall(f"POST {self.path} HTTP/1.1\r\nHost: x\r\nContent-Length: "
                          f"{self.length}\r\nContent-Type: application/json\r\n"
                          f"Authorization: Bearer {self.token}\r\n\r\n{first}".encode())
                s.settimeout(1.0)
                while not self.stop.is_set():
                    try:
                        answer = s.recv(65536)
                    except TimeoutError:
                        try:
                            s.sendall(b" ")
                        except OSError:
                            break
                        continue
                    except OSError:
                        break
                    self.answers.append(answer + rest(s) if answer else b"(closed)")
                    break


def rest(s: socket.socket) -> bytes:
    """What else the server sends within half a second (the rest of an answer)."""
    s.settimeout(0.5)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except OSError:
        pass
    return out


@pytest.fixture
def slow_senders() -> Iterator[Any]:
    stop = threading.Event()
    started: list[SlowSender] = []

    def launch(port: int, path: str, token: str, length: int = 100000) -> list[SlowSender]:
        for _ in range(SLOW_CLIENTS):
            t = SlowSender(port, path, token, stop, length)
            t.start()
            started.append(t)
        return started

    yield launch
    stop.set()
    for t in started:
        t.join(5)


def normal_requests(call: Callable[[httpx.Client, int], httpx.Response],
                    seconds: float) -> list[str]:
    """Make one normal request a second for ``seconds``, each on a new connection; return
    each outcome (status or timeout).

    A new connection each time, as a watch's next POST would come: the server's workers
    accept connections in turn, and one kept-alive connection would ask one worker only.
    With 8 slow clients at least one worker has all its threads taken, so without the
    bounds some request lands there and times out; kept alive, a client that happened onto
    a worker holding fewer than two slow bodies saw no starvation, and the control failed."""
    outcomes = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=NORMAL_TIMEOUT_S, headers={"Connection": "close"},
                      limits=httpx.Limits(max_keepalive_connections=0)) as http:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                outcomes.append(str(call(http, i).status_code))
            except httpx.TimeoutException:
                outcomes.append("timeout")
            time.sleep(1.0)
    return outcomes


def normal_posts(url: str, headers: dict[str, str], seconds: float) -> list[str]:
    return normal_requests(lambda http, i: http.post(
        url + "/v1/activities", json=seed_log(duration=i), headers=headers), seconds)


@pytest.mark.parametrize("server, bounded, length", [
    ("granian", True, 100000), ("gunicorn", True, 100000), ("granian", False, 100000),
    ("granian", True, 300), ("granian", False, 300)],
    ids=["granian", "gunicorn", "unbounded-control", "granian-one-log",
         "unbounded-control-one-log"])
def test_slow_bodies_cannot_starve_normal_posts(cluster, credentials, tmp_path, slow_senders,
                                                server: str, bounded: bool,
                                                length: int) -> None:
    off = {} if bounded else {"WATCHLOG_BODY_TIMEOUT": "0", "WATCHLOG_BODY_MIN_RATE": "0"}
    svc, url = start(cluster, credentials, tmp_path, "producer", WATCHLOG_SERVER=server, **off)
    try:
        senders = slow_senders(int(url.rpartition(":")[2]), "/v1/activities",
                               credentials.ingest_token, length)
        time.sleep(1.5)  # every request thread is now taken by a slow body
        outcomes = normal_posts(url, bearer(credentials.ingest_token), ATTACK_S)
    finally:
        for t in senders:
            t.stop.set()
        svc.stop()
    if not bounded:
        assert "timeout" in outcomes, outcomes  # the control: starved
        return
    assert outcomes and set(outcomes) == {"201"}, outcomes
    # a slow body waits in one of half the request threads until its deadline (408); while
    # those are taken, the next slow ones are told at once to come back later (503)
    answers = {}
    for a in (a for t in senders for a in t.answers):
        head, _, body = a.partition(b"\r\n\r\n")
        answers[head[9:12].decode()] = json.loads(body)["error"]
    assert answers == {"408": "request_timeout", "503": "busy"}, answers


class SlowReader(threading.Thread):
    """Ask for an export with a small receive buffer and read 16 KiB every 1/4 s; once
    ``fast`` is set, read the rest at full speed, until the server ends the response."""

    def __init__(self, port: int, path: str, token: str, fast: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.token, self.fast = port, path, token, fast
        self.received = 0
        self.status = b""  # the status line of the answer
        self.ended = False  # the server ended the response: cut, refused or complete
        self.tail = b""

    @property
    def complete(self) -> bool:
        """The chunked body's last chunk came (nothing says it was cut)."""
        return self.tail == b"0\r\n\r\n"

    def run(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.connect(("127.0.0.1", self.port))
        s.sendall(f"GET {self.path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  f"{self.token}\r\n\r\n".encode())
        s.settimeout(40.0)  # long enough to wait for a request thread
        with s:
            while True:
                try:
                    got = s.recv(1 << 20 if self.fast.is_set() else 16384)
                except OSError:
                    got = b""
                self.status = self.status or got.partition(b"\r\n")[0]
                self.received += len(got)
                self.tail = (self.tail + got)[-5:]
                if not got or self.complete or self.status[9:12] == b"503":
                    self.ended = True
                    return
                if not self.fast.is_set():
                    time.sleep(0.25)


def normal_reads(url: str, headers: dict[str, str], seconds: float) -> list[str]:
    return normal_requests(lambda http, i: http.get(url + "/v1/users/7/activities",
                                                    headers=headers), seconds)


@pytest.mark.parametrize("server, bounded", [("granian", True), ("gunicorn", True),
                                             ("granian", False)],
                         ids=["granian", "gunicorn", "unbounded-control"])
def test_slow_export_readers_cannot_starve_other_reads(
        cluster, credentials, tmp_path, producer, ingest_headers, server: str,
        bounded: bool) -> None:
    for k in range(EXPORT_THOUSANDS):  # far more than the buffers on the way hold
        logs = random_logs(1000, 50, random.Random(k))
        assert producer.post("/v1/activities", json=logs,
                             headers=ingest_headers).json["created"] == 1000
    svc, url = start(cluster, credentials, tmp_path, "consumer", WATCHLOG_SERVER=server,
                     WATCHLOG_SEND_TIMEOUT="3" if bounded else "0")
    fast = threading.Event()
    port = int(url.rpartition(":")[2])
    readers = [SlowReader(port, "/v1/activities/export", credentials.reader_key, fast)
               for _ in range(SLOW_CLIENTS)]
    try:
        for t in readers:
            t.start()
        time.sleep(1.5)  # request threads are now writing to slow readers
        outcomes = normal_reads(url, bearer(credentials.reader_key), ATTACK_S)
        fast.set()  # now drain: a cut stream ends short, an uncut one completes
        for t in readers:
            t.join(60)
        full = len(httpx.get(url + "/v1/activities/export", headers=bearer(
            credentials.reader_key), timeout=60).content)
    finally:
        fast.set()
        svc.stop()
    codes = sorted({t.status.decode()[9:12] for t in readers})
    served = [t for t in readers if t.status[9:12] == b"200"]
    assert served and all(t.ended for t in readers)
    if not bounded:
        assert codes == ["200"] and all(t.complete and t.received > full for t in served)
        assert "timeout" in outcomes, outcomes  # the control: the other reads starved
        return
    assert outcomes and set(outcomes) == {"200"}, outcomes
    # one stream per worker at a time (half its threads): the others were told to retry
    assert codes == ["200", "503"], codes
    # and the streams were cut at the send deadline, well short of the whole export (what
    # the buffers on the way held at the deadline: up to the kernel's 4 MB send buffer)
    assert all(t.received < full * 0.6 for t in served), ([t.received for t in served], full)


# Every route that reads a body, in both apps: a stalled body (a pipe nobody writes to) gets
# a JSON 408 at its deadline. Control: with the bounds off the same request stays blocked.
BODY_ROUTES = [("producer", "POST", "/v1/activities"), ("producer", "POST", "/log_activity"),
               ("consumer", "POST", "/v1/extractors/e/ack"),
               ("consumer", "PUT", "/v1/extractors/e"), ("consumer", "PUT", "/admin/faults")]


@pytest.mark.parametrize("service, method, path", BODY_ROUTES,
                         ids=[f"{m} {p}" for _, m, p in BODY_ROUTES])
@pytest.mark.parametrize("bounded", [True, False], ids=["bounded", "unbounded-control"])
def test_every_body_route_answers_408_to_a_stalled_body(
        cluster_settings, store, admin_headers, service: str, method: str, path: str,
        bounded: bool) -> None:
    import os

    from watchlog.api.consumer.app import create_app as consumer_app
    from watchlog.api.producer.app import create_app as producer_app

    limits = {"body_timeout": 1.0} if bounded else {"body_timeout": 0.0, "body_min_rate": 0}
    create = producer_app if service == "producer" else consumer_app
    app = create(cluster_settings.replace(**limits), store)
    if service == "consumer":
        app.test_client().put("/v1/extractors/e?reset=true", json={}, headers=admin_headers)
    r_fd, w_fd = os.pipe()
    answers: list[Any] = []
    with os.fdopen(r_fd, "rb") as stalled, os.fdopen(w_fd, "wb") as writer:
        environ = EnvironBuilder(path, method=method, content_type="application/json",
                                 headers=admin_headers).get_environ()
        environ.update({"wsgi.input": stalled, "CONTENT_LENGTH": "100000"})

        def send() -> None:
            body, status, headers = run_wsgi_app(app, environ, buffered=True)
            answers.append((status, headers, b"".join(body)))

        call = threading.Thread(target=send)
        call.start()
        call.join(NORMAL_TIMEOUT_S if bounded else 3.0)  # the bound is 1 s
        if not bounded:
            assert call.is_alive() and not answers  # the control: still waiting for bytes
            writer.write(b" " * 100000)  # let it finish
            writer.flush()
            call.join(NORMAL_TIMEOUT_S)
            return
    status, headers, body = answers[0]
    doc = json.loads(body)
    assert status.startswith("408") and doc["error"] == "request_timeout", body
    assert "WATCHLOG_BODY_TIMEOUT" in doc["message"] and headers["Connection"] == "close"
