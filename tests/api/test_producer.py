"""The producer API: statuses, batches, the seed endpoint, bounds and compression."""

from __future__ import annotations

import gzip
import json
import struct
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard

from helpers import now_ms, seed_log

URL = "/v1/activities"


def test_producer_single_log_is_created_then_duplicate(producer, ingest_headers) -> None:
    doc = seed_log()
    r = producer.post(URL, json=doc, headers=ingest_headers)
    assert r.status_code == 201 and r.json["status"] == "created"
    again = producer.post(URL, json=doc, headers=ingest_headers)
    assert again.status_code == 200 and again.json == {"status": "duplicate",
                                                       "event_id": r.json["event_id"]}


def test_producer_batch_stores_valid_items_and_reports_each(producer, ingest_headers) -> None:
    doc = seed_log()
    batch = [doc, seed_log(heart_rate=999), seed_log(duration=1), doc]
    r = producer.post(URL, json=batch, headers=ingest_headers)
    assert r.status_code == 200
    body = r.json
    assert (body["created"], body["duplicate"], body["rejected"]) == (2, 1, 1)
    assert [i["status"] for i in body["items"]] == ["created", "rejected", "created",
                                                    "duplicate"]
    assert body["items"][1]["field"] == "heart_rate"


def test_producer_accepts_ndjson(producer, ingest_headers) -> None:
    lines = "\n".join(json.dumps(seed_log(duration=d)) for d in range(5))
    r = producer.post(URL, data=lines, content_type="application/x-ndjson",
                      headers=ingest_headers)
    assert r.status_code == 200 and r.json["created"] == 5


def test_producer_accepts_gzip_and_bounds_decompression(producer, ingest_headers) -> None:
    body = gzip.compress(json.dumps([seed_log(duration=d) for d in range(20)]).encode())
    r = producer.post(URL, data=body, content_type="application/json",
                      headers={**ingest_headers, "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json["created"] == 20
    bomb = gzip.compress(b"[" + b" " * (5 * 1024 * 1024) + b"]")
    r = producer.post(URL, data=bomb, content_type="application/json",
                      headers={**ingest_headers, "Content-Encoding": "gzip"})
    assert r.status_code == 413 and "limit" in r.json["message"]
    r = producer.post(URL, data=body[:len(body) // 2], content_type="application/json",
                      headers={**ingest_headers, "Content-Encoding": "gzip"})
    assert r.status_code == 400 and r.json["message"] == "body: truncated gzip"


def test_producer_chunked_body_is_bounded_like_any_other(producer_url, ingest_headers) -> None:
    """A body sent chunked (no Content-Length) past WATCHLOG_MAX_BODY_BYTES (4 MiB) is a 413
    naming the limit, as a stated length is; one under it is stored. (Werkzeug's stream
    ends at the limit without a word: parsed, the cut body was a 400 "malformed JSON".)"""

    def chunked(body: bytes):  # noqa: ANN202 - httpx sends an iterator chunked
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    headers = {**ingest_headers, "Content-Type": "application/json"}
    doc = seed_log(event_id=f"chunked-{now_ms()}")
    big = json.dumps({**doc, "pad": "x" * (5 * MiB)}).encode()
    r = httpx.post(producer_url + URL, content=chunked(big), headers=headers, timeout=30)
    assert r.status_code == 413, r.text
    assert r.json()["message"] == "request body over the limit of 4194304 bytes"
    r = httpx.post(producer_url + URL, content=chunked(json.dumps(doc).encode()),
                   headers=headers, timeout=30)
    assert r.status_code == 201 and r.json()["event_id"] == doc["event_id"]


def _post_chunked_in_process(producer: Any, body: bytes,
                             headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to the app as a server hands on a chunked body: no Content-Length,
    the stream ends where the body does (``wsgi.input_terminated``)."""
    import io

    from werkzeug.test import EnvironBuilder, run_wsgi_app

    environ = EnvironBuilder(URL, method="POST", content_type="application/json",
                             headers=list(headers.items())).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True,
                    "HTTP_TRANSFER_ENCODING": "chunked"})
    out, status, _ = run_wsgi_app(producer.application, environ, buffered=True)
    return int(status.split()[0]), json.loads(b"".join(out))


def test_a_chunked_body_cut_at_the_limit_without_a_word_is_caught(
        producer, ingest_headers, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control of the chunked bound: reading a body of unknown length only up to
    the limit, as Werkzeug's stream does, answers a 400 about the cut JSON where the bound
    says 413 (both checked here, in process, with the same oversized body)."""
    from watchlog.api.producer import ingest

    big = json.dumps({**seed_log(), "pad": "x" * (5 * MiB)}).encode()
    status, doc = _post_chunked_in_process(producer, big, ingest_headers)
    assert (status, doc["message"]) == (413, "request body over the limit of 4194304 bytes")
    monkeypatch.setattr(ingest, "_read_to_the_end", lambda stream, limit: stream.read(limit))
    status, doc = _post_chunked_in_process(producer, big, ingest_headers)
    assert status == 400 and "413" not in doc["message"], doc


# Decompression bombs: 1 GiB of zeros in ~1 MB (gzip) or ~32 KB (zstd), built compactly.

MiB, GiB = 1 << 20, 1 << 30


def gzip_bomb(size: int) -> bytes:
    """A gzip member of ``size`` zero bytes: one compressed MiB, fully flushed, repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zero = bytes(MiB)
    block = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)  # no reference to what came before
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(zero, crc)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + block * (size // MiB) + c.flush()
            + struct.pack("<II", crc, size & 0xFFFFFFFF))


def zstd_bomb(size: int) -> bytes:
    """A zstd frame of ``size`` zero bytes, compressed a MiB at a time."""
    c = zstandard.ZstdCompressor(level=1).compressobj(size=size)
    zero = bytes(MiB)
    return b"".join([*(c.compress(zero) for _ in range(size // MiB)), c.flush()])


def inflated_size(encoding: str, body: bytes) -> int:
    """Decompress ``body`` a piece at a time and count (the bomb is real, and valid)."""
    n = 0
    if encoding == "gzip":
        d, data = zlib.decompressobj(16 + zlib.MAX_WBITS), body
        while not d.eof:
            n += len(d.decompress(data, 4 * MiB))
            data = d.unconsumed_tail
        return n
    with zstandard.ZstdDecompressor().stream_reader(body) as r:
        while piece := r.read(4 * MiB):
            n += len(piece)
    return n


BOMBS = {"gzip": gzip_bomb, "zstd": zstd_bomb}


def post_traced(producer, headers: dict[str, str], body: bytes, encoding: str  # noqa: ANN001
                ) -> tuple[Any, int]:
    """POST a compressed body; return the response and the request's peak traced memory."""
    tracemalloc.start()
    try:
        r = producer.post(URL, data=body, content_type="application/json",
                          headers={**headers, "Content-Encoding": encoding})
        return r, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_decompression_bomb_stops_at_the_bound(producer, ingest_headers, cluster_settings,
                                               encoding: str) -> None:
    limit = cluster_settings.max_body_bytes
    bomb = BOMBS[encoding](GiB)
    assert len(bomb) < limit < GiB == inflated_size(encoding, bomb)
    r, peak = post_traced(producer, ingest_headers, bomb, encoding)
    assert r.status_code == 413 and r.is_json
    assert r.json["error"] == "too_large" and f"limit of {limit} bytes" in r.json["message"]
    print(f"\n{encoding} 1 GiB bomb: peak {peak} bytes traced, limit {limit}")
    assert peak < 2 * limit, f"peak {peak} bytes while refusing a 1 GiB {encoding} bomb"


def _unbounded(encoding: str) -> Any:
    """Decompress everything first, check the size after: what the bound replaces."""
    def gunzip(stream: Any) -> Any:
        yield zlib.decompress(stream.read(), 16 + zlib.MAX_WBITS)

    def unzstd(stream: Any, limit: int) -> Any:
        yield zstandard.ZstdDecompressor().decompress(stream.read())

    return gunzip if encoding == "gzip" else unzstd


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_decompression_bomb_negative_control_unbounded_is_caught(
        producer, ingest_headers, cluster_settings, monkeypatch: pytest.MonkeyPatch,
        encoding: str) -> None:
    """Checked only after the fact, a bomb is still refused (413), but the peak shows it.

    A 64 MiB bomb (not 1 GiB: this control really allocates what it inflates).
    """
    from watchlog.api.producer import ingest

    limit = cluster_settings.max_body_bytes
    monkeypatch.setattr(ingest, f"_{'gunzip' if encoding == 'gzip' else 'unzstd'}",
                        _unbounded(encoding))
    r, peak = post_traced(producer, ingest_headers, BOMBS[encoding](64 * MiB), encoding)
    assert r.status_code == 413  # the status alone cannot tell the two apart...
    assert peak >= 64 * MiB > 2 * limit  # ...the peak does


def test_zstd_window_over_the_limit_is_refused_before_allocation(producer, ingest_headers
                                                                 ) -> None:
    # A streaming compressor that does not know the size keeps the window it was given.
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27,
                                                            write_content_size=False)
    c = zstandard.ZstdCompressor(compression_params=params).compressobj()
    body = c.compress(json.dumps(seed_log()).encode()) + c.flush()
    assert zstandard.get_frame_parameters(body).window_size == 128 * MiB
    r = producer.post(URL, data=body, content_type="application/json",
                      headers={**ingest_headers, "Content-Encoding": "zstd"})
    assert r.status_code == 413 and "zstd window" in r.json["message"]
    small = zstandard.ZstdCompressor(level=3).compress(json.dumps(seed_log()).encode())
    r = producer.post(URL, data=small, content_type="application/json",
                      headers={**ingest_headers, "Content-Encoding": "zstd"})
    assert r.status_code == 201


@pytest.mark.parametrize("data, ctype, status", [
    ("{not json", "application/json", 400),
    ("[1, 2", "application/json", 400),
    ("hello", "text/plain", 415),
    ("[]", "application/json", 422),
    ('{"user_id": 1}', "application/json", 422),
    ("[1]", "application/json", 200),
])
def test_producer_bad_input_gets_a_json_error(producer, ingest_headers, data, ctype,
                                              status) -> None:
    r = producer.post(URL, data=data, content_type=ctype, headers=ingest_headers)
    assert r.status_code == status
    assert r.is_json and ("message" in r.json or "items" in r.json)


def test_producer_batch_over_the_limit_is_413(producer, ingest_headers) -> None:
    r = producer.post(URL, json=[seed_log()] * 1001, headers=ingest_headers)
    assert r.status_code == 413 and "1000" in r.json["message"]


def test_producer_seed_endpoint_keeps_its_responses(producer, ingest_headers) -> None:
    r = producer.post("/log_activity", json=seed_log(), headers=ingest_headers)
    assert r.status_code == 200 and r.json["message"] == "Activity logged successfully"
    doc = seed_log()
    del doc["heart_rate"]
    r = producer.post("/log_activity", json=doc, headers=ingest_headers)
    assert r.status_code == 400 and "heart_rate" in r.json["error"]


def test_producer_health_ready_metrics_openapi(producer) -> None:
    assert producer.get("/health").status_code == 200
    assert producer.get("/ready").json["status"] == "ready"
    assert b"watchlog_http_requests_total" in producer.get("/metrics").data
    spec = producer.get("/openapi.json").json
    assert spec["openapi"].startswith("3.") and "/v1/activities" in spec["paths"]
    assert "Activity" in spec["components"]["schemas"]
    assert b"/v1/activities" in producer.get("/docs").data


def test_producer_sets_security_headers(producer) -> None:
    r = producer.get("/health")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"


# The same bombs against a real producer process (granian, one worker): its resident memory.


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (granian's workers are its children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir()
                     for c in (t / "children").read_text().split()]
        except OSError:
            continue
    return found


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def peak_growth(pids: list[int], send: Any) -> int:
    """Reset each process's peak RSS, run ``send``; return the largest growth, bytes."""
    base = {}
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        base[pid] = _kib(pid, "VmRSS")
    send()
    return max(_kib(pid, "VmHWM") - base[pid] for pid in pids) * 1024


@pytest.mark.slow
@pytest.mark.parametrize("limit_mib", [4, 64])  # 64: the control, a bound 16x higher
def test_decompression_bomb_worker_rss_follows_the_bound(cluster, credentials, tmp_path: Path,
                                                         limit_mib: int) -> None:
    """A live worker refusing 1 GiB bombs grows by less than 2x the limit; raise the limit
    and the same measure sees the growth follow it (decompression stops at the bound, and
    the bound is what holds memory down)."""
    from helpers import bearer, serve, service_env
    from watchlog.launcher.procs import free_redis_ports

    limit = limit_mib * MiB
    port = free_redis_ports("127.0.0.1", 1)[0]
    env = {**service_env(cluster, credentials), "WATCHLOG_WORKERS": "1",
           "WATCHLOG_MAX_BODY_BYTES": str(limit)}
    api = serve("producer", env, port, tmp_path, tmp_path / "metrics")
    assert api.pid is not None  # started and ready
    url = f"http://127.0.0.1:{port}{URL}"
    headers = bearer(credentials.ingest_token)
    bombs = {"gzip": gzip_bomb(GiB), "zstd": zstd_bomb(GiB)}
    try:
        with httpx.Client(timeout=60) as http:
            def send() -> None:
                for encoding, bomb in bombs.items():
                    r = http.post(url, content=bomb, headers={
                        **headers, "Content-Type": "application/json",
                        "Content-Encoding": encoding})
                    assert r.status_code == 413 and r.json()["error"] == "too_large"

            for encoding, small in (("gzip", gzip.compress(b"[1]")),
                                    ("zstd", zstandard.ZstdCompressor().compress(b"[1]"))):
                r = http.post(url, content=small, headers={  # warm: imports, first buffers
                    **headers, "Content-Type": "application/json",
                    "Content-Encoding": encoding})
                assert r.status_code == 200
            growth = peak_growth(_descendants(api.pid), send)
    finally:
        api.stop()
    print(f"\nlimit {limit_mib} MiB: worker peak RSS grew {growth / MiB:.1f} MiB")
    if limit_mib == 4:
        assert growth < 2 * limit
    else:  # the control: the same measure catches a worker that inflates 16x more
        assert growth >= 4 * MiB * 2
