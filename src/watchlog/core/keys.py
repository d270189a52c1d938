"""Every Redis key watchlog uses, as templates, with the hash tag of its partition.

A user belongs to partition ``crc32(user) % PARTITIONS``. All keys of one partition share
one hash tag, so one Lua call can touch them atomically. Each tag was chosen (by
``find_tag``, run once) so that its CRC16 slot is exactly ``p * 16384 / PARTITIONS``:
partitions spread evenly over any number of masters and move whole when slots move.

Layout (``T`` the partition tag, ``U`` the user, ``D`` the UTC day as YYYYMMDD):

==========================  ===========  ===================================================
key                         type         holds
==========================  ===========  ===================================================
wl:{T}:t:U:D                sorted set   event_id scored by event time (ms); the idempotency set
wl:{T}:a:U:D                hash         the user's daily aggregates per activity type, as
                                         written before they moved into wl:{T}:pa:D (read,
                                         no longer written; gone with retention)
wl:{T}:f:D                  sorted set   "<user> <event_id>" scored by event time: fleet index
wl:{T}:b:D                  hash         "<user> <event_id>" -> compact body: the only copy
wl:{T}:pa:D                 hash         the daily aggregates per activity type: the
                                         partition's (field "<type>") and each user's
                                         (field "<user> <type>", user_field)
wl:{T}:pu:D                 set          users active that day
wl:{T}:feed                 stream       "<score> <user> <event_id>" of what arrived, for
                                         extraction
wl:{T}:r:N                  string       what write attempt N answered (1 created, 0 dup
                                         per log), kept ATTEMPT_TTL_S for its retries
==========================  ===========  ===================================================
"""

from __future__ import annotations

import binascii
import zlib
from datetime import UTC, datetime
from functools import lru_cache

PARTITIONS = 64
SLOTS = 16384
PREFIX = "wl"

TAGS: tuple[str, ...] = (
    "p00.ee0", "p01.da5", "p02.80ac", "p03.85df", "p04.11b3", "p05.242e",
    "p06.d189", "p07.9358", "p08.192c2", "p09.5548", "p10.237", "p11.372",
    "p12.86e", "p13.11745", "p14.1c0d", "p15.1f5a", "p16.e86", "p17.16c",
    "p18.d16", "p19.e53", "p20.faa", "p21.8329", "p22.2233", "p23.17ce",
    "p24.cb98", "p25.1051a", "p26.922", "p27.867", "p28.d298", "p29.9049",
    "p30.17f", "p31.e93", "p32.13af", "p33.16dc", "p34.1448", "p35.40833",
    "p36.26f9", "p37.11188", "p38.6d48", "p39.43952", "p40.3dc3", "p41.23b",
    "p42.b579", "p43.e18", "p44.8968", "p45.6c38", "p46.59c4", "p47.18ba",
    "p48.e5f", "p49.d1c", "p50.14cc9", "p51.20b9", "p52.43803", "p53.1208",
    "p54.2050", "p55.15ef", "p56.1188f", "p57.3088", "p58.2ca", "p59.1028",
    "p60.e9f", "p61.173", "p62.9919", "p63.7c49",
)


def find_tag(p: int) -> str:
    """Return the first tag pNN.<hex> whose slot is p * SLOTS / PARTITIONS."""
    target = p * SLOTS // PARTITIONS
    i = 0
    while slot_of(f"p{p:02d}.{i:x}") != target:
        i += 1
    return f"p{p:02d}.{i:x}"


def slot_of(tag: str) -> int:
    """Return the Redis Cluster slot of a hash tag (CRC16/XMODEM, as Redis computes it)."""
    return binascii.crc_hqx(tag.encode(), 0) % SLOTS


def partition_of(user: str) -> int:
    """Return the partition of a user key (CRC32: stable across processes and versions)."""
    return zlib.crc32(user.encode()) % PARTITIONS


DAY_MS = 86_400_000  # a day in milliseconds: keys, ranges, retention and clocks share it


def day_of(ms: int) -> str:
    """Return the UTC day (YYYYMMDD) of an epoch-millisecond time."""
    return _day(ms // DAY_MS)


@lru_cache(maxsize=1024)
def _day(days_since_epoch: int) -> str:
    return datetime.fromtimestamp(days_since_epoch * 86400, UTC).strftime("%Y%m%d")


def _k(p: int, rest: str) -> str:
    return f"{PREFIX}:{{{TAGS[p]}}}:{rest}"


def user_index(p: int, user: str, day: str) -> str:
    return _k(p, f"t:{user}:{day}")


def user_aggregates(p: int, user: str, day: str) -> str:
    """The older per-user-day aggregates hash: read with the new fields, never written."""
    return _k(p, f"a:{user}:{day}")


def user_field(user: str, type_code: int | str) -> str:
    """Return a user's field for an activity type in the partition-day aggregates hash."""
    return f"{user} {type_code}"


def fleet_index(p: int, day: str) -> str:
    return _k(p, f"f:{day}")


def bodies(p: int, day: str) -> str:
    return _k(p, f"b:{day}")


def ref(user: str, event_id: str) -> str:
    """Return a log's field in the bodies hash and member in the fleet index.

    Neither a user key nor an event id can hold a space (``schema.SAFE_ID``), so the pair
    is unambiguous.
    """
    return f"{user} {event_id}"


def fleet_aggregates(p: int, day: str) -> str:
    return _k(p, f"pa:{day}")


def active_users(p: int, day: str) -> str:
    return _k(p, f"pu:{day}")


def feed(p: int) -> str:
    return _k(p, "feed")


ATTEMPT_TTL_S = 60  # longer than any retry of one write (cluster.RETRY_DEADLINE_S)


def attempt(p: int, nonce: str) -> str:
    """Return the key where one write attempt records its answer (see ``wl_ingest``)."""
    return _k(p, f"r:{nonce}")


def partition_slot(p: int) -> int:
    return slot_of(TAGS[p])
