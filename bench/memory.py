"""Where Redis memory goes: MEMORY USAGE of every key of a few partitions, by key kind.

All keys of a partition live in one slot (``keys.partition_slot``), so CLUSTER
GETKEYSINSLOT lists them without scanning the keyspace. Shares are of the sampled bytes.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from watchlog.core import keys
from watchlog.launcher.redis.cluster import LocalCluster

KIND = re.compile(r"^wl:\{[^}]+\}:([a-z]+)")
NAMES = {"b": "event bodies (hash)", "t": "user time index (zset)",
         "a": "older per-user-day aggregates (hash, read only)",
         "f": "fleet time index (zset of references)",
         "pa": "daily aggregates of partitions and users (hash)", "pu": "active users (set)",
         "feed": "feed (stream)", "r": "write attempts' answers (60 s)"}


def breakdown(cluster: LocalCluster, partitions: int = 4) -> dict[str, Any]:
    """Return each key kind's share of the memory of ``partitions`` sampled partitions."""
    rc = cluster.admin_client()
    used: Counter[str] = Counter()
    try:
        for p in range(partitions):
            slot = keys.partition_slot(p)
            node = rc.get_node_from_key(keys.feed(p))
            names = rc.execute_command("CLUSTER GETKEYSINSLOT", slot, 1_000_000,
                                       target_nodes=node)
            pipe = rc.get_redis_connection(node).pipeline(transaction=False)
            for k in names:
                pipe.execute_command("MEMORY USAGE", k, "SAMPLES", "0")
            for k, size in zip(names, pipe.execute(), strict=True):
                m = KIND.match(k)
                used[NAMES.get(m.group(1), m.group(1)) if m else "other"] += size or 0
    finally:
        rc.close()
    total = sum(used.values()) or 1
    return {kind: round(100 * b / total, 1) for kind, b in used.most_common()}
