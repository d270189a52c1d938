"""wl_ingest's grouped writes (one command per key per call) keep the store's guarantees:
duplicates inside one call and across calls are stored and counted once, and a key's
expiry moves exactly when it must (a late log's keys on every later write), not on every
call."""

from __future__ import annotations

from typing import Any

from helpers import now_ms, seed_log, to_events
from watchlog.core import keys, schema
from watchlog.launcher.redis.cluster import LocalCluster
from watchlog.store import Store, writer


def test_duplicates_inside_one_call_are_stored_and_counted_once(store: Store) -> None:
    a, b, c = (seed_log(user_id=41, event_id=f"in-call-{i}", duration=10 + i) for i in range(3))
    assert store.ingest(to_events([a])) == [True]
    # one user-day group of five: a stored before, c twice in the same call
    answers = store.ingest(to_events([a, b, c, c, seed_log(user_id=41, event_id="in-call-9")]))
    assert answers == [False, True, True, False, True]
    got = store.user_days("41", [to_events([a])[0].day])[0]["running"]
    assert got["n"] == 4 and got["d"] == 10 + 11 + 12 + 1800
    page, _ = store.user_page("41", now_ms() - 86400_000, now_ms(), 50, None, None)
    ids = [str(schema.body_to_dict(x)["event_id"]) for x in page]
    assert sorted(ids) == ["in-call-0", "in-call-1", "in-call-2", "in-call-9"]
    # control: the figures tell a double count apart (every log as sent, a twice and c twice)
    as_sent = 10 + (10 + 11 + 12 + 12 + 1800)
    assert got["d"] != as_sent and got["n"] != 6


def _expireats(cluster: LocalCluster) -> int:
    total = 0
    for port in cluster.ports:
        client = cluster.node_client(port)
        try:
            stats: dict[str, Any] = client.info("commandstats")
        finally:
            client.close()
        total += int(stats.get("cmdstat_expireat", {}).get("calls", 0))
    return total


def _expiry(cluster: LocalCluster, e: schema.Event) -> dict[str, int]:
    rc = cluster.admin_client()
    try:
        return {k: rc.expiretime(k) for k in (
            keys.user_index(e.partition, e.user, e.day),
            keys.fleet_index(e.partition, e.day), keys.fleet_aggregates(e.partition, e.day),
            keys.active_users(e.partition, e.day), keys.bodies(e.partition, e.day))}
    finally:
        rc.close()


def test_expiry_moves_when_it_must_and_only_then(store: Store, cluster: LocalCluster) -> None:
    # A late log (40 days old): its keys are kept `retention` after their latest write.
    day_ms = (now_ms() // 86400_000 - 40) * 86400_000
    first, second, third = to_events([
        seed_log(user_id=42, event_id=f"late-{i}", timestamp=schema.iso_ms(day_ms + i * 1000))
        for i in range(3)])
    t0 = now_ms()
    calls, _ = writer.ingest_calls([first], 30, now_ms=t0)
    assert store.runner.run(calls, wait=True) == [[1]]
    assert set(_expiry(cluster, first).values()) == {t0 // 1000 + 30 * 86400}
    # Written again 1,000 s later: every key of that day moves with it.
    calls, _ = writer.ingest_calls([second], 30, now_ms=t0 + 1000_000)
    assert store.runner.run(calls, wait=True) == [[1]]
    assert set(_expiry(cluster, first).values()) == {t0 // 1000 + 1000 + 30 * 86400}
    # Written again with the same expiry: no partition-day key's expiry must move, so one
    # EXPIREAT: the user-day index's, which every call that adds to it gets.
    before = _expireats(cluster)
    calls, _ = writer.ingest_calls([third], 30, now_ms=t0 + 1000_000)
    assert store.runner.run(calls, wait=True) == [[1]]
    assert _expireats(cluster) == before + 1
    # Negative control: the same write one second later must move them, and does.
    fourth = to_events([seed_log(user_id=42, event_id="late-3",
                                 timestamp=schema.iso_ms(day_ms + 3000))])
    calls, _ = writer.ingest_calls(fourth, 30, now_ms=t0 + 1001_000)
    assert store.runner.run(calls, wait=True) == [[1]]
    assert _expireats(cluster) == before + 1 + 5
    assert set(_expiry(cluster, first).values()) == {t0 // 1000 + 1001 + 30 * 86400}
    # The aggregates still count every log once; the bookkeeping field is not a figure.
    assert store.user_days("42", [first.day])[0]["running"]["n"] == 4


def test_aggregates_read_packed_and_per_figure_fields() -> None:
    """One field per activity type (figures in layout.AGGREGATES order); fields written one
    per figure before that are still read and added; the expire-at field is no figure."""
    from watchlog.store.layout import AGGREGATES, EXPIRES_FIELD
    from watchlog.store.reader import parse_aggregates

    assert AGGREGATES == ("n", "d", "m", "c", "h", "k", "x")
    raw = {b"1": b"2 100 50 30 140 2 75", b"3": b"1 10 0 5 0 0 0",
           EXPIRES_FIELD.encode(): b"1767225600",
           b"1:n": b"1", b"1:d": b"5", b"1:h": b"90", b"1:k": b"1", b"1:x": b"90"}
    assert parse_aggregates(raw) == {
        schema.ACTIVITY_TYPES[1]: {"n": 3, "d": 105, "m": 50, "c": 30, "h": 230, "k": 3,
                                   "x": 90},
        schema.ACTIVITY_TYPES[3]: {"n": 1, "d": 10, "m": 0, "c": 5},  # no heart rate: none
    }


def test_logs_built_without_validation_are_stored_as_given(store: Store) -> None:
    """The script reads a log's figures from its body's head, so it must take any body the
    store builds (negative figures, an event id with quotes: the CSV export's own test
    stores such a log); a body it cannot read fails the whole call before any write."""
    from datetime import UTC, datetime

    import msgspec
    import pytest
    from redis.exceptions import ResponseError

    odd = schema.Activity(user_id="odd-user", activity_type="running", device_id="w1",
                          timestamp=datetime.fromtimestamp((now_ms() - 600_000) / 1000, UTC),
                          duration=60, distance=-1.5, event_id='=1+"quoted"\\,x')
    e = schema.to_event(odd)
    assert store.ingest([e]) == [True]
    agg = store.user_days("odd-user", [e.day])[0]["running"]
    assert agg["m"] == -1500 and agg["n"] == 1
    page, _ = store.user_page("odd-user", now_ms() - 86400_000, now_ms(), 10, None, None)
    assert [schema.body_to_dict(b)["event_id"] for b in page] == ['=1+"quoted"\\,x']
    # control: a body the script cannot read is refused, and nothing of the call is stored
    bad = msgspec.structs.replace(e, event_id="bad-1", body=b"not a body")
    good = msgspec.structs.replace(e, event_id="good-1", body=e.body.replace(
        b'"=1+\\"quoted\\"\\\\,x"', b'"good-1"'))
    calls, _ = writer.ingest_calls([good, bad], 30)
    with pytest.raises(ResponseError, match="not a body"):
        store.runner.run(calls, wait=True)
    assert store.user_days("odd-user", [e.day])[0]["running"]["n"] == 1
