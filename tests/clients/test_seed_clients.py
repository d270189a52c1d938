"""The seed's own clients, written the seed's way, against live watchlog servers.

The seed's producer client posts one random log at a time to ``POST /log_activity``; its
consumer client polls ``GET /activity_logs`` and prints the plain JSON list it gets
(SEED.md). Here both carry a token, as watchlog requires, and nothing else changes. The
logs' event times are days old (a watch that synced late): ``/activity_logs`` is defined by
arrival, so they are listed all the same.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from watchlog.core.schema import ACTIVITY_TYPES, STATUSES
from watchlog.store import Store

HEADER = "X-Next-Cursor"


def seed_producer_client(url: str, token: str, n: int, rng: random.Random) -> list[str]:
    """Post ``n`` random logs one by one, as the seed's producer client did; return their
    event ids in the order they were sent."""
    sent = []
    for _ in range(n):
        when = datetime.now(UTC) - timedelta(days=rng.randint(3, 9), minutes=rng.randint(0, 999))
        log = {"user_id": rng.randint(1, 100), "activity_type": rng.choice(ACTIVITY_TYPES),
               "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
               "duration": rng.randint(60, 3600), "distance": round(rng.uniform(0, 10), 2),
               "heart_rate": rng.randint(60, 180), "calories_burned": rng.randint(10, 800),
               "location": {"latitude": rng.uniform(-90, 90), "longitude": rng.uniform(-180, 180)},
               "device_id": f"watch_{rng.randint(1, 100)}",
               "activity_status": rng.choice(STATUSES)}
        r = httpx.post(f"{url}/log_activity", json=log,
                       headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert r.json()["message"] == "Activity logged successfully"
        sent.append(r.json()["event_id"])
        time.sleep(0.005)  # the seed slept 10 s between logs; distinct arrival times suffice
    return sent


def seed_consumer_poll(url: str, token: str, params: dict[str, Any] | None = None
                       ) -> httpx.Response:
    """One poll of the seed's consumer client: GET /activity_logs, a plain list."""
    return httpx.get(f"{url}/activity_logs", params=params or {},
                     headers={"Authorization": f"Bearer {token}"})


def test_seed_clients_each_poll_holds_every_log_just_sent_oldest_first(
        producer_url: str, consumer_url: str, credentials: Any) -> None:
    rng = random.Random(15)
    for _ in range(3):
        sent = seed_producer_client(producer_url, credentials.ingest_token,
                                    rng.randint(10, 13), rng)
        r = seed_consumer_poll(consumer_url, credentials.reader_key)
        assert r.status_code == 200
        got = [item["event_id"] for item in r.json()]
        assert got[-len(sent):] == sent  # every one, in the order it arrived, oldest first


@pytest.mark.parametrize("use_cursor", [True, False], ids=["after-cursor", "plain-poll"])
def test_seed_consumer_polling_with_after_misses_nothing(
        producer_url: str, consumer_url: str, credentials: Any, use_cursor: bool) -> None:
    """More logs arrive between two polls than a page holds: the client following
    X-Next-Cursor sees each once; the plain poll (negative control) misses some."""
    rng, token = random.Random(16), credentials.reader_key
    seed_producer_client(producer_url, credentials.ingest_token, 3, rng)
    cursor = seed_consumer_poll(consumer_url, token, {"limit": 5}).headers[HEADER]
    sent = seed_producer_client(producer_url, credentials.ingest_token, 12, rng)
    seen: list[str] = []
    for _ in range(4):
        params = {"limit": 5, **({"after": cursor} if use_cursor else {})}
        r = seed_consumer_poll(consumer_url, token, params)
        assert r.status_code == 200
        seen += [item["event_id"] for item in r.json() if item["event_id"] not in seen]
        cursor = r.headers[HEADER]
    if use_cursor:
        assert seen == sent
        again = seed_consumer_poll(consumer_url, token, {"after": cursor})
        assert again.status_code == 200 and again.json() == []  # nothing new: empty list
    else:
        assert set(sent) - set(seen)


def test_activity_logs_404_only_when_nothing_is_stored(
        producer_url: str, consumer_url: str, credentials: Any, store: Store) -> None:
    token = credentials.reader_key
    r = seed_consumer_poll(consumer_url, token)
    assert r.status_code == 404 and r.json() == {"message": "No activity logs found"}
    sent = seed_producer_client(producer_url, credentials.ingest_token, 4, random.Random(17))
    r = seed_consumer_poll(consumer_url, token)
    assert r.status_code == 200 and [i["event_id"] for i in r.json()] == sent
    # Negative control: the event-day definition (today's and yesterday's fleet index)
    # finds none of these days-old logs; that is what answered 404 before.
    assert store.recent(100) == []


def test_activity_logs_refuses_a_cursor_it_did_not_make(consumer_url: str,
                                                        credentials: Any) -> None:
    for bad in ("0", "a1.!!", "a1.eJwrzs9NVdIBAAfjAkk"):
        r = seed_consumer_poll(consumer_url, credentials.reader_key, {"after": bad})
        assert r.status_code == 422, bad
        assert r.json()["field"] == "after" and "X-Next-Cursor" in r.json()["message"]
