"""A fleet of simulated watches: users with sessions that start, progress, pause and end.

Every log covers the stretch of its session since the previous log, so the sums the
reports make (duration, distance, calories) equal the sessions' totals. Values follow
the activity: distance = speed x duration, calories = MET x weight x hours. All content
and every ``event_id`` come from one seeded ``random.Random``, so a seed replays the same
stream (timestamps are the wall clock's). Offline watches keep their logs and release
them later, shuffled, in one burst. The pacing of the fleet into requests is
``watchlog.clients.dispatch``.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

# One log as a watch sends it: the JSON object of POST /v1/activities (the schema's
# ``Activity`` once validated; ``schema.LogDoc`` once stored).
LogDoc = dict[str, Any]


class Profile(NamedTuple):
    """How an activity looks: speed (km/h), heart rate (bpm), MET, session minutes."""

    speed: tuple[float, float]
    heart_rate: tuple[int, int]
    met: float
    minutes: tuple[int, int]


PROFILES: dict[str, Profile] = {
    "running": Profile((8, 16), (130, 180), 9.8, (15, 75)),
    "walking": Profile((4, 6), (85, 120), 3.5, (10, 90)),
    "cycling": Profile((15, 35), (110, 165), 7.5, (20, 150)),
    "swimming": Profile((1.5, 4), (115, 160), 7.0, (15, 60)),
    "hiking": Profile((3, 6), (95, 145), 6.0, (60, 240)),
    "rowing": Profile((6, 12), (120, 170), 7.0, (15, 60)),
    "elliptical": Profile((0, 0), (110, 160), 5.0, (15, 50)),
    "yoga": Profile((0, 0), (70, 110), 2.5, (20, 75)),
    "strength_training": Profile((0, 0), (90, 140), 5.0, (20, 75)),
    "hiit": Profile((0, 0), (140, 185), 8.0, (10, 40)),
    "other": Profile((0, 0), (80, 130), 4.0, (10, 60)),
}
TYPES = tuple(PROFILES)
CITIES = ((37.77, -122.42), (40.71, -74.01), (51.51, -0.13), (48.86, 2.35), (35.68, 139.69),
          (-33.87, 151.21), (52.52, 13.40), (19.43, -99.13), (1.35, 103.82), (-23.55, -46.63))
SEGMENT_S = (60, 300)  # seconds a watch lets pass between two logs of a session
OFFLINE_S = (5.0, 60.0)  # how long a watch stays offline, wall-clock seconds
P_PAUSE, P_CANCEL = 0.08, 0.01


@dataclass
class User:
    user_id: int
    devices: list[str]
    weight: float  # kg
    favourites: list[str]
    home: tuple[float, float]


@dataclass
class Session:
    device: str
    kind: str
    speed: float  # km/h, this session's pace
    planned: int  # s
    elapsed: int = 0
    paused: bool = False
    position: list[float] = field(default_factory=list)


def make_users(n: int, rng: random.Random) -> list[User]:
    """Return ``n`` users owning 1-2 watches each, numbered ``watch_1`` on."""
    users, next_watch = [], 1
    for uid in range(1, n + 1):
        k = 1 if rng.random() < 0.7 else 2
        devices = [f"watch_{next_watch + i}" for i in range(k)]
        next_watch += k
        lat, lon = rng.choice(CITIES)
        users.append(User(uid, devices, round(rng.uniform(48, 105), 1), rng.sample(TYPES, 3),
                          (lat + rng.uniform(-0.2, 0.2), lon + rng.uniform(-0.2, 0.2))))
    return users


def iso(t: float) -> str:
    """Format epoch seconds as ISO-8601 UTC with milliseconds and ``Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class Fleet:
    """Generate activity logs; ``generate`` returns what can be sent now."""

    def __init__(self, users: int, random_seed: int | None = None, offline_rate: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.rng = random.Random(random_seed)
        # timing-only choices
        self.side = random.Random(None if random_seed is None else random_seed + 1)
        self.users = make_users(users, self.rng)
        self.sessions: dict[int, Session] = {}
        self.offline: dict[int, tuple[float, list[LogDoc]]] = {}
        self.offline_rate = offline_rate
        self.clock = clock
        self.generated = 0

    def generate(self, n: int) -> list[LogDoc]:
        """Make ``n`` new logs; return those online watches send now plus released bursts."""
        out: list[LogDoc] = self._release(self.clock())
        for _ in range(n):
            user = self.users[self.rng.randrange(len(self.users))]
            event = self._next(user)
            self.generated += 1
            if self.offline_rate and user.user_id not in self.offline \
                    and self.rng.random() < self.offline_rate:
                self.offline[user.user_id] = (self.clock() + self.rng.uniform(*OFFLINE_S), [])
            held = self.offline.get(user.user_id)
            (held[1] if held else out).append(event)
        return out

    def drain(self) -> list[LogDoc]:
        """Bring every watch back online; return all the logs they held."""
        return self._release(float("inf"))

    def _release(self, now: float) -> list[LogDoc]:
        out: list[LogDoc] = []
        for uid in [u for u, (until, _) in self.offline.items() if until <= now]:
            held = self.offline.pop(uid)[1]
            self.side.shuffle(held)  # a burst arrives out of order
            out.extend(held)
        return out

    def _next(self, user: User) -> LogDoc:
        s = self.sessions.get(user.user_id)
        if s is None:
            s = self.sessions[user.user_id] = self._start(user)
            return self._log(user, s, "started", 0)
        if s.paused:
            s.paused = False
            return self._log(user, s, "in_progress", self._segment(s))
        seg = self._segment(s)
        r = self.rng.random()
        if s.elapsed + seg >= s.planned or r < P_CANCEL:
            del self.sessions[user.user_id]
            return self._log(user, s, "completed" if r >= P_CANCEL else "cancelled", seg)
        s.paused = r < P_CANCEL + P_PAUSE
        return self._log(user, s, "paused" if s.paused else "in_progress", seg)

    def _start(self, user: User) -> Session:
        rng = self.rng
        kind = rng.choice(user.favourites) if rng.random() < 0.85 else rng.choice(TYPES)
        p = PROFILES[kind]
        return Session(rng.choice(user.devices), kind, rng.uniform(*p.speed),
                       rng.randint(*p.minutes) * 60, position=list(user.home))

    def _segment(self, s: Session) -> int:
        return min(self.rng.randint(*SEGMENT_S), max(s.planned - s.elapsed, 1))

    def _log(self, user: User, s: Session, status: str, seconds: int) -> LogDoc:
        rng, p = self.rng, PROFILES[s.kind]
        s.elapsed += seconds
        speed = s.speed * rng.uniform(0.9, 1.1)
        km = speed * seconds / 3600
        lo, hi = p.heart_rate
        hr = rng.randint(lo, (lo + hi) // 2) if status == "started" else rng.randint(lo, hi)
        s.position[0] += km / 111 * rng.uniform(-0.7, 0.7)
        s.position[1] += km / 111 * rng.uniform(-0.7, 0.7)
        return {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user_id": user.user_id, "device_id": s.device,
            "activity_type": s.kind, "activity_status": status,
            "timestamp": iso(self.clock() - rng.random() * 2),
            "duration": seconds, "distance": round(km, 3), "heart_rate": hr,
            "calories_burned": round(p.met * user.weight * seconds / 3600, 1),
            "location": {"latitude": round(min(max(s.position[0], -90), 90), 6),
                         "longitude": round((s.position[1] + 180) % 360 - 180, 6)},
        }
