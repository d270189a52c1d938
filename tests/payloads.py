"""Activity logs for tests: the seed's payload and variations on it."""

from __future__ import annotations

import random
import time
from typing import Any

from watchlog.core.schema import ACTIVITY_TYPES, iso_ms


def seed_log(**changes: Any) -> dict[str, Any]:
    """The seed's own payload (DESIGN.md), at a recent time."""
    minute = now_ms() // 60_000 * 60_000  # the same doc twice in a test is an exact resend
    doc = {"user_id": 7, "activity_type": "running", "timestamp": iso_ms(minute - 3600_000),
           "duration": 1800, "distance": 5.2, "heart_rate": 150, "calories_burned": 420,
           "location": {"latitude": 37.5, "longitude": -122.3}, "device_id": "watch_3",
           "activity_status": "completed"}
    doc.update(changes)
    return doc


def now_ms() -> int:
    return int(time.time() * 1000)


def random_logs(n: int, users: int, rng: random.Random, span_ms: int = 6 * 3600_000,
                end_ms: int | None = None) -> list[dict[str, Any]]:
    """Return ``n`` distinct valid logs spread over ``users`` and ``span_ms``."""
    end = now_ms() - 60_000 if end_ms is None else end_ms
    out = []
    for i in range(n):
        hr = rng.choice([None, rng.randint(60, 190)])
        out.append({
            "user_id": rng.randrange(users) if rng.random() < 0.5 else f"u{rng.randrange(users)}",
            "activity_type": rng.choice(ACTIVITY_TYPES),
            "timestamp": iso_ms(end - rng.randrange(span_ms)),
            "duration": rng.randint(0, 7200), "distance": round(rng.uniform(0, 30), 3),
            "heart_rate": hr, "calories_burned": round(rng.uniform(0, 900), 1),
            "location": {"latitude": round(rng.uniform(-90, 90), 5),
                         "longitude": round(rng.uniform(-180, 180), 5)},
            "device_id": f"watch_{rng.randrange(50)}", "event_id": f"e{i}-{rng.getrandbits(40)}",
            "activity_status": "completed",
        })
    return out
