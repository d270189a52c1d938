"""Every validation rule of the activity log, with no cluster needed."""

from __future__ import annotations

import json

import pytest

from helpers import seed_log
from watchlog.core import schema
from watchlog.core.errors import InvalidInput


def event(doc: dict) -> schema.Event:
    return schema.to_event(schema.decode(json.dumps(doc)))


def test_schema_accepts_the_seed_payload_as_is() -> None:
    doc = seed_log(timestamp="2026-11-27T08:15:00Z")
    e = schema.to_event(schema.decode(json.dumps(doc)), now_ms=1_795_800_000_000)
    out = schema.body_to_dict(e.body)
    assert out["user_id"] == 7 and out["timestamp"] == "2026-11-27T08:15:00Z"
    assert out["distance"] == 5.2 and out["calories_burned"] == 420
    assert out["location"] == {"latitude": 37.5, "longitude": -122.3}


@pytest.mark.parametrize("ts, expected", [
    ("2026-11-27T10:15:00+02:00", "2026-11-27T08:15:00Z"),
    ("2026-11-27T08:15:00.250Z", "2026-11-27T08:15:00.250Z"),
    ("2026-11-27T08:15:00", "2026-11-27T08:15:00Z"),
])
def test_schema_normalises_timestamps_to_utc_ms(ts: str, expected: str) -> None:
    e = schema.to_event(schema.decode(json.dumps(seed_log(timestamp=ts))),
                        now_ms=1_795_800_000_000)
    assert schema.body_to_dict(e.body)["timestamp"] == expected


def test_schema_returns_string_user_ids_as_sent() -> None:
    assert schema.body_to_dict(event(seed_log(user_id="alice.7")).body)["user_id"] == "alice.7"


@pytest.mark.parametrize("changes, field", [
    ({"heart_rate": 300}, "heart_rate"),
    ({"heart_rate": 10}, "heart_rate"),
    ({"heart_rate": "fast"}, "heart_rate"),
    ({"duration": -1}, "duration"),
    ({"distance": -0.1}, "distance"),
    ({"calories_burned": -5}, "calories_burned"),
    ({"location": {"latitude": 91, "longitude": 0}}, "location.latitude"),
    ({"location": {"latitude": 0, "longitude": -181}}, "location.longitude"),
    ({"activity_type": "teleporting"}, "activity_type"),
    ({"activity_status": "exploded"}, "activity_status"),
    ({"user_id": "a b"}, "user_id"),
    ({"user_id": "x" * 65}, "user_id"),
    ({"user_id": -1}, "user_id"),
    ({"user_id": True}, "user_id"),
    ({"device_id": "../etc"}, "device_id"),
    ({"event_id": "x" * 65}, "event_id"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"timestamp": "2999-01-01T00:00:00Z"}, "timestamp"),
    ({"timestamp": "1970-01-01T00:00:00Z"}, "timestamp"),
])
def test_schema_rejects_with_field_and_reason(changes: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        event(seed_log(**changes))
    assert info.value.details.get("field") == field
    assert field.split(".")[-1] in info.value.message


@pytest.mark.parametrize("missing", ["user_id", "activity_type", "timestamp", "device_id"])
def test_schema_names_a_missing_required_field(missing: str) -> None:
    doc = seed_log()
    del doc[missing]
    with pytest.raises(InvalidInput) as info:
        event(doc)
    assert info.value.details["field"] == missing


def test_schema_derives_the_same_event_id_for_the_same_content() -> None:
    a, b = event(seed_log(timestamp="2026-11-27T08:15:00Z")), event(
        seed_log(timestamp="2026-11-27T10:15:00+02:00"))
    c = event(seed_log(timestamp="2026-11-27T08:15:00Z", duration=1801))
    assert a.event_id == b.event_id != c.event_id


def test_schema_keeps_the_clients_event_id() -> None:
    assert event(seed_log(event_id="abc-1")).event_id == "abc-1"


def test_schema_malformed_json_is_a_400() -> None:
    with pytest.raises(InvalidInput) as info:
        schema.decode(b"{nope")
    assert info.value.status == 400
