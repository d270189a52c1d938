"""Fault injection: the spec, its random source, and both APIs delaying and failing on purpose."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import cast

import msgspec
import pytest
from prometheus_client import REGISTRY
from redis.cluster import RedisCluster

from helpers import json_of, seed_log
from watchlog.api.faults import (
    PRESETS,
    REFRESH_S,
    Faults,
    FaultSpec,
    decode_spec,
    from_settings,
    parse_delay,
)
from watchlog.core.errors import InjectedFault, InvalidInput
from watchlog.core.settings import Settings
from watchlog.store import Store


@pytest.fixture(scope="module", autouse=True)
def settle() -> Iterator[None]:
    """After this module, let live workers (if a later test uses them) drop any spec set here.

    The flush fixture deletes the spec key before the next test, but a worker may still hold
    the spec it read for up to ``REFRESH_S``.
    """
    yield
    time.sleep(REFRESH_S + 0.1)


def faults_count(service: str, route: str, kind: str) -> float:
    labels = {"service": service, "route": route, "kind": kind}
    return REGISTRY.get_sample_value("watchlog_faults_injected_total", labels) or 0.0


def requests_count(status: str, injected: str) -> float:
    labels = {"service": "producer", "route": "/v1/activities", "method": "POST",
              "status": status, "injected": injected}
    return REGISTRY.get_sample_value("watchlog_http_requests_total", labels) or 0.0


def put_faults(client, headers: dict[str, str], **spec: object):  # noqa: ANN001, ANN201
    r = client.put("/admin/faults", json=spec, headers=headers)
    assert r.status_code == 200, r.json
    return r.json


def stored_ids(store: Store, user: str, day: str) -> set[str]:
    from watchlog.core import keys

    p = keys.partition_of(user)
    found = cast(list[bytes], store.rc.zrange(keys.user_index(p, user, day), 0, -1))
    return {k.decode() for k in found}


# -- the spec ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("fixed:0.2", ("fixed", (0.2,))),
    ("uniform:0.5:2", ("uniform", (0.5, 2.0))),
    ("lognormal:0.05:1", ("lognormal", (0.05, 1.0))),
])
def test_faults_delay_parses(text: str, expected: tuple) -> None:
    assert parse_delay(text) == expected


@pytest.mark.parametrize("text", ["fixed", "fixed:a", "uniform:1", "gauss:1:2", "fixed:-1"])
def test_faults_delay_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="delay"):
        parse_delay(text)


OVERFLOWING = ["fixed:nan", "fixed:inf", "fixed:-inf", "fixed:1e308", "uniform:0:1e12",
               "uniform:nan:1", "uniform:2:1", "lognormal:1e9:1", "lognormal:0.1:1e9",
               "lognormal:0.1:inf", "fixed:30.001"]


@pytest.mark.parametrize("text", OVERFLOWING)
def test_faults_delay_rejects_non_finite_and_over_the_cap(text: str) -> None:
    with pytest.raises(ValueError, match="delay"):
        parse_delay(text)
    with pytest.raises(ValueError, match="WATCHLOG_FAULT_"):
        from_settings(Settings(fault_delay_p=1.0, fault_delay=text))
    assert parse_delay("fixed:30") == ("fixed", (30.0,))  # the documented cap itself


@pytest.mark.parametrize("checked", [True, False])
def test_faults_overflowing_delay_is_refused_over_http(producer, ingest_headers, admin_headers,
                                                       monkeypatch, checked: bool) -> None:
    """``PUT /admin/faults`` refuses each overflowing delay (422, the spec in force kept).

    Negative control: with the bounds check switched off, ``fixed:1e308`` is accepted and
    every request on the route then answers 500 (time.sleep raises OverflowError).
    """
    parse_delay.cache_clear()
    if not checked:
        monkeypatch.setattr("watchlog.api.faults.check_delay_bounds", lambda *a: None)
    try:
        for text in OVERFLOWING if checked else ["fixed:1e308"]:
            r = producer.put("/admin/faults", json={"delay_p": 1.0, "delay": text},
                             headers=admin_headers)
            if checked:
                assert r.status_code == 422 and r.json["field"] == "delay", (text, r.json)
        if checked:
            assert producer.get("/admin/faults", headers=admin_headers).json["delay_p"] == 0
        got = producer.post("/v1/activities", json=seed_log(), headers=ingest_headers)
        assert got.status_code == (201 if checked else 500)
    finally:
        parse_delay.cache_clear()


@pytest.mark.parametrize("body, field", [
    ({"abort_status": 418}, "abort_status"),
    ({"abort_p": 1.5}, "abort_p"),
    ({"abort_phase": "during"}, "abort_phase"),
    ({"delay": "gauss:1:2"}, "delay"),
    ({"delay": "fixed:nan"}, "delay"),
    ({"retry_after": -1}, "retry_after"),
    ({"preset": "doom"}, "preset"),
])
def test_faults_admin_spec_rejects_bad_values(body: dict, field: str | None) -> None:
    with pytest.raises(InvalidInput) as e:
        decode_spec(json.dumps(body).encode())
    assert e.value.status == 422 and e.value.details.get("field") == field


def test_faults_seed_preset_is_the_seed_consumer() -> None:
    seed = decode_spec(b'{"preset": "seed"}')
    assert (seed.delay_p, seed.delay, seed.abort_p, seed.abort_status) == (
        1.0, "uniform:0.5:2", 0.2, 500)


def test_faults_settings_build_the_default_spec() -> None:
    s = Settings(fault_delay_p=0.5, fault_delay="fixed:0.1", fault_abort_p=0.25,
                 fault_abort_status=503, fault_abort_phase="after", fault_retry_after=2,
                 fault_routes="/v1/activities, /log_activity")
    assert from_settings(s) == FaultSpec(0.5, "fixed:0.1", 0.25, 503, "after", 2,
                                         ["/v1/activities", "/log_activity"])
    assert from_settings(Settings(fault_preset="chaos")) == PRESETS["chaos"]


@pytest.mark.parametrize("change", [{"fault_abort_status": 418}, {"fault_abort_p": 2.0},
                                    {"fault_abort_phase": "later"}])
def test_faults_settings_reject_bad_values(change: dict) -> None:
    with pytest.raises(ValueError, match="WATCHLOG_FAULT"):
        from_settings(Settings(**change))


def decisions(faults: Faults, n: int) -> list[str]:
    """Return what ``before`` decided for ``n`` requests: ok, before or after."""
    out = []
    for _ in range(n):
        try:
            out.append("after" if faults.before("/v1/activities") else "ok")
        except InjectedFault:
            out.append("before")
    return out


def _no_redis() -> RedisCluster:
    raise ConnectionError("no Redis behind this Faults")


def fixed_faults(seed: str, spec: FaultSpec) -> Faults:
    """A Faults whose spec never changes (no Redis behind it)."""
    f = Faults("producer", Settings(fault_seed=seed), _no_redis)
    f._cached = (float("inf"), spec)  # noqa: SLF001 - pin the spec for a pure unit test
    return f


SPEC = FaultSpec(abort_p=0.3, abort_phase="both")


def test_faults_same_seed_replays_the_same_decisions() -> None:
    a, b = fixed_faults("42", SPEC), fixed_faults("42", SPEC)
    first = decisions(a, 300)
    assert first == decisions(b, 300)
    assert first != decisions(fixed_faults("43", SPEC), 300)
    share = first.count("before") + first.count("after")
    assert 60 < share < 120 and first.count("after") > 20  # ~30%, both phases


REPLAY = """
import sys
from watchlog.api.faults import Faults, FaultSpec
from watchlog.core.settings import Settings
f = Faults("producer", Settings(fault_seed="7"), lambda: None)
f._cached = (float("inf"), FaultSpec(abort_p=0.5, abort_phase="after"))
print("".join("a" if f.before("/v1/activities") else "." for _ in range(64)))
"""


def test_faults_seed_replays_across_processes() -> None:
    """A failing run is replayed by another process (another pid) with the same seed."""
    runs = {subprocess.run([sys.executable, "-c", REPLAY], check=True, capture_output=True,
                           text=True).stdout for _ in range(2)}
    assert len(runs) == 1


def test_faults_delay_distributions_stay_in_range() -> None:
    f = fixed_faults("1", FaultSpec())
    assert f._delay(FaultSpec(delay="fixed:0.25")) == 0.25  # noqa: SLF001
    uni = [f._delay(FaultSpec(delay="uniform:0.5:2")) for _ in range(500)]  # noqa: SLF001
    assert 0.5 <= min(uni) and max(uni) <= 2 and 1.1 < sum(uni) / 500 < 1.4
    tail = sorted(f._delay(FaultSpec(delay="lognormal:0.05:1")) for _ in range(2001))  # noqa: SLF001
    assert 0.04 < tail[1000] < 0.06  # the median is the one asked for
    assert tail[1980] > 5 * tail[1000]  # and the tail is long


# -- both APIs -----------------------------------------------------------------------------


def test_faults_admin_endpoints_need_the_admin_key(producer, reader_headers, admin_headers
                                                   ) -> None:
    assert producer.get("/admin/faults").status_code == 401
    assert producer.put("/admin/faults", json={}, headers=reader_headers).status_code == 403
    assert producer.get("/admin/faults", headers=admin_headers).json == json.loads(
        json.dumps({f: getattr(FaultSpec(), f) for f in FaultSpec.__struct_fields__}))
    r = producer.put("/admin/faults", json={"abort_status": 418}, headers=admin_headers)
    assert r.status_code == 422 and r.json["field"] == "abort_status"
    assert put_faults(producer, admin_headers, preset="seed")["abort_p"] == 0.2
    assert producer.get("/admin/faults", headers=admin_headers).json["delay_p"] == 1.0
    assert producer.delete("/admin/faults", headers=admin_headers).json["abort_p"] == 0.0


def test_faults_abort_before_stores_nothing(producer, store, ingest_headers, admin_headers
                                            ) -> None:
    put_faults(producer, admin_headers, abort_p=1.0, abort_status=502, retry_after=3)
    before = (faults_count("producer", "/v1/activities", "abort_before"),
              requests_count("502", "true"))
    doc = seed_log(event_id="ab-1")
    r = producer.post("/v1/activities", json=doc, headers=ingest_headers)
    assert r.status_code == 502 and r.json["error"] == "injected_fault"
    assert r.headers["Retry-After"] == "3"
    assert faults_count("producer", "/v1/activities", "abort_before") == before[0] + 1
    assert requests_count("502", "true") == before[1] + 1
    assert "ab-1" not in stored_ids(store, "7", doc["timestamp"][:10].replace("-", ""))


def test_faults_abort_after_commits_then_fails(producer, store, ingest_headers, admin_headers
                                               ) -> None:
    """The ambiguous failure: the write is stored, the client hears 5xx, a resend dedupes."""
    put_faults(producer, admin_headers, abort_p=1.0, abort_status=503, abort_phase="after")
    before = faults_count("producer", "/v1/activities", "abort_after")
    doc = seed_log(event_id="aa-1")
    r = producer.post("/v1/activities", json=doc, headers=ingest_headers)
    assert r.status_code == 503 and r.json["error"] == "injected_fault"
    assert r.headers["X-Content-Type-Options"] == "nosniff"  # still a whole response
    assert faults_count("producer", "/v1/activities", "abort_after") == before + 1
    assert "aa-1" in stored_ids(store, "7", doc["timestamp"][:10].replace("-", ""))
    producer.delete("/admin/faults", headers=admin_headers)
    r = producer.post("/v1/activities", json=doc, headers=ingest_headers)
    assert r.status_code == 200 and r.json["status"] == "duplicate"


def test_faults_real_errors_are_not_counted_as_injected(producer, ingest_headers,
                                                        admin_headers) -> None:
    put_faults(producer, admin_headers, abort_p=1.0, abort_phase="after")
    before = requests_count("422", "false")
    r = producer.post("/v1/activities", json=seed_log(duration=-1), headers=ingest_headers)
    assert r.status_code == 422  # a real error is never replaced by an injected one
    assert requests_count("422", "false") == before + 1


def test_faults_apply_only_to_their_routes(producer, ingest_headers, admin_headers) -> None:
    put_faults(producer, admin_headers, abort_p=1.0, routes=["/log_activity"])
    assert producer.post("/v1/activities", json=seed_log(),
                         headers=ingest_headers).status_code == 201
    assert producer.post("/log_activity", json=seed_log(duration=3),
                         headers=ingest_headers).status_code == 500
    put_faults(producer, admin_headers, abort_p=1.0)
    for path in ("/health", "/metrics", "/openapi.json", "/admin/faults"):
        assert producer.get(path, headers=admin_headers).status_code == 200, path


def test_faults_consumer_delays_reads(consumer, reader_headers, admin_headers) -> None:
    put_faults(consumer, admin_headers, delay_p=1.0, delay="fixed:0.2")
    before = faults_count("consumer", "/v1/reports/daily", "delay")
    started = time.perf_counter()
    assert consumer.get("/v1/reports/daily", headers=reader_headers).status_code == 200
    assert time.perf_counter() - started >= 0.2
    assert faults_count("consumer", "/v1/reports/daily", "delay") == before + 1


def test_faults_reach_other_workers_through_redis(cluster_settings, store, admin_headers,
                                                  ingest_headers) -> None:
    """A PUT on one worker reaches another (a second app on the same store) within 1 s."""
    from watchlog.api.producer.app import create_app

    one, two = (create_app(cluster_settings, store).test_client() for _ in range(2))
    assert two.post("/v1/activities", json=seed_log(), headers=ingest_headers).status_code == 201
    put_faults(one, admin_headers, abort_p=1.0, abort_status=504)
    time.sleep(1.1)  # the refresh period of every worker
    assert two.post("/v1/activities", json=seed_log(duration=9),
                    headers=ingest_headers).status_code == 504


def test_faults_admin_get_reads_what_another_worker_just_put(cluster_settings, store,
                                                             admin_headers) -> None:
    """GET is fresh, not the worker's cached copy: read-modify-write must not undo a PUT."""
    from watchlog.api.producer.app import create_app

    one, two = (create_app(cluster_settings, store).test_client() for _ in range(2))
    assert json_of(two.get("/admin/faults", headers=admin_headers))["abort_p"] == 0.0
    put_faults(one, admin_headers, abort_p=0.4)
    assert json_of(two.get("/admin/faults", headers=admin_headers))["abort_p"] == 0.4


@pytest.mark.parametrize("kind", ["forged", "replayed", "expired", "fresh-control"])
def test_faults_spec_written_with_the_redis_password_alone_is_ignored(
        cluster_settings, store, ingest_headers, kind: str) -> None:
    """The apps' Redis password could switch faults on; a spec now needs the admin key's HMAC,
    a fresh issue time, and to be newer than what the process applied (an old signed spec
    written back after a reset is a replay).

    Negative control: a spec signed and dated as ``PUT /admin/faults`` does it applies.
    """
    from watchlog.api.faults import MAX_SPEC_AGE_S
    from watchlog.api.producer.app import create_app

    client = create_app(cluster_settings, store).test_client()
    admin = Faults("producer", cluster_settings, lambda: store.rc)
    spec = FaultSpec(abort_p=1.0, abort_status=503)
    admin.set(spec)
    signed_then = store.rc.get(admin.key)
    admin.set(None)  # the admin's reset, which the app applies
    time.sleep(1.1)  # every worker's refresh period
    assert client.post("/v1/activities", json=seed_log(), headers=ingest_headers).status_code == 201
    payload = msgspec.json.encode(spec)
    if kind == "forged":
        raw = payload + b"\n" + str(int(time.time() * 1000)).encode() + b"\n" + b"0" * 64
    elif kind == "replayed":
        raw = signed_then  # the admin's own earlier value, written back
    else:
        issued = time.time() * 1000 - (MAX_SPEC_AGE_S + 60) * 1000 * (kind == "expired")
        signed = payload + b"\n" + str(int(issued) + 10**6 * (kind != "expired")).encode()
        raw = signed + b"\n" + admin._sign(signed)
    store.rc.set(admin.key, raw)  # the apps' own Redis user, as an attacker holding it
    time.sleep(1.1)
    status = client.post("/v1/activities", json=seed_log(duration=5),
                         headers=ingest_headers).status_code
    assert status == (503 if kind == "fresh-control" else 201)
    admin.set(None)


def test_faults_cannot_lock_out_their_own_admin_route(producer, admin_headers) -> None:
    """Naming /admin/faults in routes made every later PUT/DELETE answer 500: refused now."""
    for routes in (["/admin/faults"], ["/health"], ["nope"], ["/nope"]):
        r = producer.put("/admin/faults", json={"abort_p": 1.0, "routes": routes},
                         headers=admin_headers)
        assert r.status_code == 422 and r.json["field"] == "routes", routes
    r = producer.put("/admin/faults", json={"preset": "seed", "abort_p": 1e308},
                     headers=admin_headers)
    assert r.status_code == 422 and r.json["field"] == "preset"
    assert producer.delete("/admin/faults", headers=admin_headers).status_code == 200
