"""Validation libraries and JSON codecs, timed on a 1,000-log batch of the seed payload.

``python -m bench.validation`` prints the figures; ``python -m bench`` records them.
msgspec (the one watchlog uses) against pydantic v2 for decode + validate; msgspec against
orjson and the standard library for the plain JSON work of the export path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, Field, TypeAdapter

from bench import load
from watchlog.core import schema

# pydantic-core's Rust regex has no look-around, and needs none: its `$` is the true end.
SafeId = Annotated[str, Field(pattern=schema.SAFE_ID.removesuffix("(?!\\n)"))]


class PLocation(BaseModel):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class PActivity(BaseModel):
    """The same rules as ``watchlog.core.schema.Activity``, in pydantic v2."""

    user_id: Annotated[int, Field(ge=0, le=2**53 - 1)] | SafeId
    activity_type: Literal[schema.ACTIVITY_TYPES]  # type: ignore[valid-type]
    timestamp: datetime
    device_id: SafeId
    duration: int = Field(0, ge=0, le=7 * 86400)
    distance: float = Field(0.0, ge=0, le=1000)
    heart_rate: int | None = Field(None, ge=25, le=250)
    calories_burned: float = Field(0.0, ge=0, le=20000)
    location: PLocation | None = None
    activity_status: Literal[schema.STATUSES] = "completed"  # type: ignore[valid-type]
    event_id: SafeId | None = None


def best_us(fn: Callable[[], Any], rounds: int) -> float:
    """Return the best of ``rounds`` timings of ``fn``, in microseconds per log."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(best / 1000 * 1e6, 2)


def batch(n: int = 1000) -> bytes:
    raws = load.raw_logs(n, list(range(1000)), load.yesterday_ms(), "v")
    return b"[" + b",".join(raws) + b"]"


def validation(rounds: int) -> dict[str, float]:
    raw = batch()
    m = msgspec.json.Decoder(list[schema.Activity])
    p = TypeAdapter(list[PActivity])
    assert len(m.decode(raw)) == len(p.validate_json(raw)) == 1000
    return {"msgspec": best_us(lambda: m.decode(raw), rounds),
            "pydantic_v2": best_us(lambda: p.validate_json(raw), rounds)}


def codecs(rounds: int) -> dict[str, dict[str, float]]:
    """Decode the batch to dicts; encode the export's dicts (one line per log)."""
    import orjson

    raw = batch()
    docs = [schema.body_to_dict(e.body) for e in load.build_events(msgspec.json.decode(
        raw, type=list[msgspec.Raw]))]
    return {
        "decode": {"msgspec": best_us(lambda: msgspec.json.decode(raw), rounds),
                   "orjson": best_us(lambda: orjson.loads(raw), rounds),
                   "json": best_us(lambda: json.loads(raw), rounds)},
        "encode": {"msgspec": best_us(lambda: [msgspec.json.encode(d) for d in docs], rounds),
                   "orjson": best_us(lambda: [orjson.dumps(d) for d in docs], rounds),
                   "json": best_us(lambda: [json.dumps(d).encode() for d in docs], rounds)},
    }


def run(rounds: int) -> dict[str, Any]:
    return {"validate_us_per_log": validation(rounds), "json_us_per_log": codecs(rounds)}


if __name__ == "__main__":
    print(json.dumps(run(20), indent=2))
