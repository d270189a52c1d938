"""The functions' KEYS/ARGV layout is named once in Python (store/layout.py) and the Lua
library declares the same names in the same order; the aggregate letters agree too."""

from __future__ import annotations

import dataclasses
import re

import pytest

from watchlog.store import layout
from watchlog.store.cluster import LIBRARY

# `local INGEST_KEYS = {` … `}` blocks of `part = positions{'a', 'b'}` lines.
TABLE = re.compile(r"^local (\w+)_(KEYS|ARGS) = \{(.*?)\}$", re.M | re.S)
PART = re.compile(r"(\w+) = positions\{([^}]*)\}")
LUA_NAME = {"wl_ingest": "INGEST", "wl_page": "PAGE", "wl_bodies": "BODIES"}


def lua_layouts(source: str) -> dict[tuple[str, str], dict[str, tuple[str, ...]]]:
    out = {}
    for name, side, body in TABLE.findall(source):
        out[(name, side.lower())] = {
            part: tuple(re.findall(r"'([^']*)'", names)) for part, names in PART.findall(body)}
    return out


def mismatches(lay: layout.Layout, source: str) -> list[str]:
    declared = lua_layouts(source)
    lua = LUA_NAME[lay.function]
    bad = []
    for side in ("keys", "args"):
        python = getattr(lay, side)
        found = declared.get((lua, side), {})
        if found != python:
            bad.append(f"{lay.function} {side}: Python {python} != Lua {found}")
    return bad


@pytest.mark.parametrize("lay", layout.LAYOUTS, ids=lambda lay: lay.function)
def test_layout_matches_the_library(lay: layout.Layout) -> None:
    assert f"function_name = '{lay.function}'" in LIBRARY
    assert mismatches(lay, LIBRARY) == []


def test_layout_check_catches_a_moved_argument() -> None:
    """Negative control: the same check fails when one side reorders or adds a name."""
    swapped = dict(layout.INGEST.args, head=("retry", "minid", "days", "groups"))
    moved = dataclasses.replace(layout.INGEST, args=swapped)
    assert mismatches(moved, LIBRARY)
    extra = dataclasses.replace(layout.PAGE, keys={"day": ("index", "bodies", "more")})
    assert mismatches(extra, LIBRARY)
    edited = LIBRARY.replace("positions{'minid', 'retry',", "positions{'retry', 'minid',")
    assert edited != LIBRARY and mismatches(layout.INGEST, edited)


def test_aggregate_letters_match_the_library() -> None:
    letters = re.search(r"^local AGGREGATES = \{([^}]*)\}", LIBRARY, re.M)
    assert letters is not None
    assert tuple(re.findall(r"'(\w)'", letters.group(1))) == layout.AGGREGATES
    assert f"local EXPIRES = '{layout.EXPIRES_FIELD}'" in LIBRARY
    assert ":" not in layout.EXPIRES_FIELD  # parse_aggregates tells it from a figure


def test_hand_built_parts_are_checked_at_import() -> None:
    with pytest.raises(ValueError):
        layout.INGEST.order("args", "group", ("user", "day", "count"))
    with pytest.raises(ValueError):
        layout.PAGE.pack("head", from_ms=1)
