"""The store against a real 3-master cluster: idempotency, exact aggregates, reads, spread."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from helpers import now_ms, random_logs, recompute, seed_log, stored_aggregates, to_events
from watchlog.core import keys, schema
from watchlog.launcher.redis.cluster import LocalCluster
from watchlog.store import Store


def test_store_resend_is_stored_once_and_counted_once(store: Store) -> None:
    events = to_events([seed_log(), seed_log(duration=10)])
    assert store.ingest(events) == [True, True]
    assert store.ingest(events) == [False, False]
    users, by_type = store.fleet_day(events[0].day)
    assert users == 1 and by_type["running"]["n"] == 2
    assert by_type["running"]["d"] == 1810


def test_store_reads_aggregates_written_in_the_older_layouts(store: Store,
                                                            cluster: LocalCluster) -> None:
    """A day written before the user's figures moved into the partition-day hash (its own
    per-user-day hash, packed or one field per figure) still counts in the summary and the
    fleet report, added to what was written since."""
    older, newer = to_events([seed_log(event_id="o1"), seed_log(event_id="n1", duration=10)])
    p, day = older.partition, older.day
    rc = cluster.admin_client()
    try:
        rc.hset(keys.user_aggregates(p, older.user, day), "0", "1 1800 5000 3000 140 1 140")
        rc.hset(keys.fleet_aggregates(p, day), mapping={"0:n": 2, "0:d": 100})
    finally:
        rc.close()
    assert store.ingest([newer]) == [True]
    summary = store.user_days(older.user, [day])[0]["running"]
    assert (summary["n"], summary["d"]) == (2, 1810)
    assert store.fleet_day(day)[1]["running"]["n"] == 3  # 2 per-figure + 1 packed


def test_store_concurrent_writes_keep_exact_aggregates(store: Store) -> None:
    rng = random.Random(8)
    docs = random_logs(16_000, users=300, rng=rng)
    events = to_events(docs)
    chunks = [events[i::8] for i in range(8)]

    def write(chunk: list[schema.Event]) -> int:
        # each thread sends its share in batches of 250, and resends one batch
        created = 0
        for i in range(0, len(chunk), 250):
            created += sum(store.ingest(chunk[i:i + 250]))
        store.ingest(chunk[:250])
        return created

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(write, chunks)) == 16_000
    expected = recompute(events)
    stored = stored_aggregates(store, events)
    assert stored == {k: dict(v) for k, v in expected.items()}


def test_store_pages_have_no_gaps_or_repeats(store: Store) -> None:
    rng = random.Random(3)
    docs = [seed_log(event_id=f"p{i}", timestamp=schema.iso_ms(now_ms() - rng.randrange(
        20 * 3600_000) // 1000 * 1000)) for i in range(537)]  # many equal timestamps
    events = to_events(docs)
    store.ingest(events)
    seen, cursor = [], None
    while True:
        page, cursor = store.user_page("7", now_ms() - 86400_000, now_ms(), 50, cursor, None)
        seen += [schema.body_to_dict(b) for b in page]
        if cursor is None:
            break
    ids = [str(d["event_id"]) for d in seen]
    assert sorted(ids) == sorted(e.event_id for e in events)
    assert len(set(ids)) == len(ids)
    stamps = [str(d["timestamp"]) for d in seen]
    assert stamps == sorted(stamps)


def test_store_type_filter_pages_only_that_type(store: Store) -> None:
    events = to_events([seed_log(event_id=f"t{i}", activity_type=("running", "cycling")[i % 2])
                        for i in range(40)])
    store.ingest(events)
    page, cursor = store.user_page("7", now_ms() - 86400_000, now_ms(), 15, None,
                                   schema.TYPE_CODE["cycling"])
    page2, _ = store.user_page("7", now_ms() - 86400_000, now_ms(), 15, cursor,
                               schema.TYPE_CODE["cycling"])
    docs = [schema.body_to_dict(b) for b in page + page2]
    assert len(docs) == 20 and {d["activity_type"] for d in docs} == {"cycling"}


def test_store_export_matches_a_brute_force_read(store: Store) -> None:
    events = to_events(random_logs(3000, users=200, rng=random.Random(5), span_ms=40 * 3600_000))
    store.ingest(events)
    frm, to = now_ms() - 30 * 3600_000, now_ms()
    exported = list(store.export(frm, to, None))
    stamps = [schema.body_ts(b) for b in exported]
    assert stamps == sorted(stamps)
    expected = sorted(e.body for e in events if frm <= e.ts <= to)
    assert sorted(exported) == expected
    # brute force: every stored body read directly, filtered by its time
    brute = []
    for key in {keys.bodies(e.partition, e.day) for e in events}:
        brute += [b for b in cast(list[bytes], store.rc.hvals(key))  # replies: bytes
                  if frm <= schema.body_ts(b) <= to]
    assert sorted(brute) == expected


def test_store_extraction_is_at_least_once_with_ack_and_redelivery(store: Store) -> None:
    events = to_events(random_logs(300, users=50, rng=random.Random(1)))
    store.ingest(events)
    store.extractor_create("rep", "earliest")
    got, redelivered = store.extractor_batch("rep", "c1", 200, 60_000)
    assert len(got) == 200 and redelivered == 0
    store.extractor_ack("rep", [fid for fid, _ in got[:150]])
    rest, _ = store.extractor_batch("rep", "c1", 500, 60_000)
    assert len(rest) == 100
    # nothing acknowledged from `rest` and 50 of the first batch: after the timeout they return
    again, redelivered = store.extractor_batch("rep", "c1", 500, 0)
    assert redelivered == 150 and len(again) == 150
    store.extractor_ack("rep", [fid for fid, _ in again])
    assert store.extractor_info("rep") == {"lag": 0, "pending": 0, "partitions": 64}
    delivered = {b for _, b in got} | {b for _, b in rest}
    assert delivered == {e.body for e in events}


def test_store_extraction_resumes_after_a_new_client(store: Store, cluster_settings) -> None:
    store.ingest(to_events(random_logs(100, users=10, rng=random.Random(2))))
    store.extractor_create("nightly", "earliest")
    first, _ = store.extractor_batch("nightly", "c", 60, 60_000)
    store.extractor_ack("nightly", [f for f, _ in first])
    fresh = Store(cluster_settings)  # a restarted extractor process
    second, _ = fresh.extractor_batch("nightly", "c", 100, 60_000)
    fresh.close()
    assert len(second) == 40 and not {f for f, _ in first} & {f for f, _ in second}


def test_store_sets_retention_ttls(store: Store, cluster: LocalCluster) -> None:
    late = seed_log(event_id="late", timestamp=schema.iso_ms(now_ms() - 40 * 86400_000))
    fresh, old = to_events([seed_log(), late])
    store.ingest([fresh, old])
    rc = cluster.admin_client()
    for e, keep_from in ((fresh, schema_day_end(fresh.day)), (old, now_ms() // 1000)):
        day_keys = [keys.user_index(e.partition, e.user, e.day),
                    keys.fleet_index(e.partition, e.day), keys.fleet_aggregates(e.partition, e.day),
                    keys.active_users(e.partition, e.day), keys.bodies(e.partition, e.day)]
        expected = max(keep_from, now_ms() // 1000) + 30 * 86400
        for k in day_keys:
            assert abs(rc.expiretime(k) - expected) <= 5, k
    assert rc.xlen(keys.feed(fresh.partition)) >= 1
    rc.close()
    # a log older than the retention is kept like any other, not dropped at once
    page, _ = store.user_page("7", old.ts - 1000, old.ts + 1000, 10, None, None)
    assert [schema.body_to_dict(b)["event_id"] for b in page] == ["late"]


def schema_day_end(day: str) -> int:
    from watchlog.store.writer import day_end

    return day_end(day)


def test_store_spreads_keys_evenly_over_three_masters(store: Store,
                                                      cluster: LocalCluster) -> None:
    rng = random.Random(11)
    docs = [seed_log(user_id=u, event_id=f"s{u}-{i}",
                     timestamp=schema.iso_ms(now_ms() - rng.randrange(3600_000)))
            for u in range(1000) for i in range(2)]
    for i in range(0, len(docs), 1000):
        store.ingest(to_events(docs[i:i + 1000]))
    rc = cluster.admin_client()
    sizes = Counter({n.name: rc.dbsize(target_nodes=n) for n in rc.get_primaries()})
    rc.close()
    total = sum(sizes.values())
    assert len(sizes) == 3
    for node, n in sizes.items():
        assert 0.25 <= n / total <= 0.42, (node, n, total)


def test_store_same_millisecond_events_page_and_extract_exactly(store: Store) -> None:
    ts = schema.iso_ms(now_ms() // 1000 * 1000 - 5000)
    events = to_events([seed_log(event_id=f"same-{i}", timestamp=ts) for i in range(1500)])
    store.ingest(events)
    seen, cursor = [], None
    while True:
        page, cursor = store.user_page("7", now_ms() - 3600_000, now_ms(), 400, cursor, None)
        seen += [str(schema.body_to_dict(b)["event_id"]) for b in page]
        if cursor is None:
            break
    assert sorted(seen) == sorted(e.event_id for e in events)
    store.extractor_create("same", "earliest")
    got, _ = store.extractor_batch("same", "c", 1500, 60_000)
    assert sorted(b for _, b in got) == sorted(e.body for e in events)


def test_store_survives_connections_the_server_closed(store: Store,
                                                       cluster: LocalCluster) -> None:
    """The runner keeps connections per master; when Redis drops them (restart, timeout,
    CLIENT KILL), the next write's sends fail, each call is retried alone on a fresh
    connection, and everything is stored exactly once."""
    rng = random.Random(11)
    first, second = (to_events(random_logs(600, users=200, rng=rng)) for _ in range(2))
    assert all(store.ingest(first))
    admin = cluster.admin_client()
    try:
        killed = sum(admin.client_kill_filter(user="watchlog", target_nodes=node)
                     for node in admin.get_primaries())
    finally:
        admin.close()
    assert killed >= 3  # at least the runner's connection to each master
    assert store.ingest(second + first) == [True] * len(second) + [False] * len(first)
    assert stored_aggregates(store, first + second) == {
        k: dict(v) for k, v in recompute(first + second).items()}


def test_store_retried_write_answers_what_its_first_attempt_did(store: Store) -> None:
    """A retry of a write whose reply (or WAIT) was lost must not call new logs duplicates."""
    from watchlog.store import writer

    events = to_events([seed_log(), seed_log(duration=11)])
    calls, _ = writer.ingest_calls(events, 30)
    assert store.runner.run(calls, wait=True) == [[1, 1]]
    # The same attempt again, as the runner retries it: the first attempt's answer.
    assert store.runner.run([c.again() for c in calls], wait=True) == [[1, 1]]
    # Negative control: the same call without the retry flag finds its own writes.
    assert store.runner.run(calls, wait=True) == [[0, 0]]
    # A new request with the same logs is a real resend: duplicates. Counted once.
    assert store.ingest(events) == [False, False]
    assert store.fleet_day(events[0].day)[1]["running"]["n"] == 2


def test_store_ingest_script_keeps_answers_as_long_as_keys_say() -> None:
    """wl_ingest's KEEP is keys.ATTEMPT_TTL_S, and retries stop well before it."""
    from importlib.resources import files

    from watchlog.store import cluster

    source = files("watchlog.store").joinpath("lua/library.lua").read_text()
    assert f"local KEEP = {keys.ATTEMPT_TTL_S} " in source
    assert cluster.RETRY_DEADLINE_S < keys.ATTEMPT_TTL_S / 2
