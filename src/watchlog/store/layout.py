"""The KEYS and ARGV of each function of ``lua/library.lua``, named once.

A function's keys and arguments are a head (fixed positions) followed by repeated parts
(one per day, per user-day group, per log…). Each part is a tuple of names, in order. The
library declares the same lists (``positions{...}`` tables, which its code addresses by
name); ``tests/store/test_store_layout.py`` checks that both sides name the same things in the
same order, so a new or moved argument cannot be counted differently on the two sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Layout:
    """Named positions of one function's KEYS and ARGV, by part (``head``, ``day``…)."""

    function: str
    keys: dict[str, tuple[str, ...]]
    args: dict[str, tuple[str, ...]]

    def arg(self, part: str, name: str) -> int:
        """Return the 0-based position of argument ``name`` in its part."""
        return self.args[part].index(name)

    def pack(self, part: str, **values: Any) -> list[Any]:
        """Return the arguments of one ``part`` in the layout's order."""
        names = self.args[part]
        if values.keys() != set(names):
            raise ValueError(f"{self.function} {part}: expected {names}, got {sorted(values)}")
        return [values[n] for n in names]

    def order(self, side: str, part: str, names: Sequence[str]) -> tuple[str, ...]:
        """Check that code building ``part`` by hand uses the layout's order; return it."""
        declared = (self.keys if side == "keys" else self.args)[part]
        if tuple(names) != declared:
            raise ValueError(f"{self.function} {side}.{part} is {declared}, not {tuple(names)}")
        return declared


# wl_ingest: a batch of logs of ONE partition, grouped by UTC day and, within a day, by user.
# KEYS: head, then per day the partition-day keys, then per (user, day) group its keys.
# ARGV: head, then per day its expire-at, then per group (day number, user, log count),
# then per log, in group order, its event id and compact body (the script reads the time,
# type and figures from the body's head: schema.BODY_FIELDS).
INGEST = Layout(
    "wl_ingest",
    keys={"head": ("feed", "attempt"),
          "day": ("fleet_index", "aggregates", "active_users", "bodies"),
          "group": ("user_index",)},
    args={"head": ("minid", "retry", "days", "groups"),
          "day": ("expire_at",),
          "group": ("day", "user", "count"),
          "log": ("event_id", "body")},
)

# wl_page: one page of time indexes, one (index, bodies hash) pair of keys per day.
PAGE = Layout(
    "wl_page",
    keys={"day": ("index", "bodies")},
    args={"head": ("from_ms", "to_ms", "limit", "after", "type", "prefix")},
)

# wl_bodies: bodies by reference, from ONE partition's bodies hashes (one key per day).
BODIES = Layout(
    "wl_bodies",
    keys={"day": ("bodies",)},
    args={"item": ("key", "ref")},
)

LAYOUTS = (INGEST, PAGE, BODIES)

# The aggregates hash of a partition's day has one field per activity type, its code, for
# the partition, and one per user and type, '<user> <code>' (keys.user_field), each holding
# the type's figures in AGGREGATES order as space-separated integers (the heart-rate ones 0
# until a log of the type has one). Read by reader.parse_aggregates, which names each figure
# by these letters (merged with reader.merge_aggregates), and by the consumer's summaries.
COUNT = "n"  # logs
DURATION = "d"  # seconds
DISTANCE = "m"  # metres
CALORIES = "c"  # 0.1 kcal
HR_SUM = "h"  # sum of heart rates (bpm) of the logs that have one
HR_COUNT = "k"  # logs with a heart rate
HR_MAX = "x"  # highest heart rate: merged by max, not summed
AGGREGATES = (COUNT, DURATION, DISTANCE, CALORIES, HR_SUM, HR_COUNT, HR_MAX)  # Lua's order
# The field (not a type code) where an aggregates hash keeps the expire-at its keys were given.
EXPIRES_FIELD = "e"
