"""What CLUSTER NODES says, parsed: one entry per node, its flags and slot ranges."""

from __future__ import annotations

from dataclasses import dataclass

from watchlog.core.keys import SLOTS


@dataclass(frozen=True)
class NodeEntry:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str
    slots: int
    ranges: tuple[tuple[int, int], ...]


def parse_nodes(text: str) -> dict[int, NodeEntry]:
    """Parse CLUSTER NODES into entries by port."""
    entries = {}
    for line in text.strip().splitlines():
        parts = line.split()
        port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
        ranges = []
        for item in parts[8:]:
            if item.startswith("["):
                continue  # a slot being imported or migrated: not owned yet
            lo, _, hi = item.partition("-")
            ranges.append((int(lo), int(hi or lo)))
        slots = sum(hi - lo + 1 for lo, hi in ranges)
        entries[port] = NodeEntry(parts[0], port, frozenset(parts[2].split(",")), parts[3],
                                  slots, tuple(ranges))
    return entries


def split_slots(masters: int) -> list[tuple[int, int]]:
    bounds = [round(i * SLOTS / masters) for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]
