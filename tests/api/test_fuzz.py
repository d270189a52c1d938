# Flask's test responses type .json as "Any | None". The examples of a derandomized test
# are drawn from a hash of its source, so its lines stay as they are: index checks are off.
# mypy: disable-error-code="index"
"""Fuzzing: schemathesis against both OpenAPI specs, hypothesis against the schema.

Bounded so that the file runs in well under a minute: a few examples per operation,
derandomized (the same examples every run, so CI failures replay), no example database.
Faults are off (the settings' default), so any 5xx is a bug.
"""

from __future__ import annotations

import copy
import gzip
import json
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from helpers import now_ms, seed_log
from watchlog.api.consumer.openapi import consumer_spec
from watchlog.api.producer.openapi import producer_spec
from watchlog.core import schema
from watchlog.core.errors import InvalidInput
from watchlog.core.settings import Settings
from watchlog.store import Store

schemathesis.serializer.alias("application/x-ndjson", "text/plain")  # NDJSON is a text body
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
BOUNDED = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzzed_apps(cluster_settings: Settings, store: Store) -> dict[str, Flask]:
    from watchlog.api.consumer.app import create_app as consumer_app
    from watchlog.api.producer.app import create_app as producer_app

    assert cluster_settings.fault_abort_p == 0 and cluster_settings.fault_delay_p == 0
    # thousands of calls a second: the consumer's rate limit is not what is fuzzed here
    unlimited = cluster_settings.replace(consumer_rate_limit="1000000/second")
    return {"producer": producer_app(cluster_settings, store),
            "consumer": consumer_app(unlimited, store)}


def call(case: Any, app: Flask, headers: dict[str, str]) -> None:
    case.call_and_validate(app=app, headers=headers, checks=CHECKS)
    if case.operation.path == "/admin/faults" and case.method.upper() == "PUT":
        app.test_client().delete("/admin/faults", headers=headers)  # faults stay off


# Loaded from the spec functions (no app needed at collection): one test per operation.
PRODUCER = schemathesis.openapi.from_dict(copy.deepcopy(producer_spec()))
CONSUMER = schemathesis.openapi.from_dict(copy.deepcopy(consumer_spec()))


@PRODUCER.parametrize()
@BOUNDED
def test_fuzz_producer_conforms_to_its_spec(case: Any, fuzzed_apps: dict[str, Flask],
                                            admin_headers: dict[str, str]) -> None:
    call(case, fuzzed_apps["producer"], admin_headers)


@CONSUMER.parametrize()
@BOUNDED
def test_fuzz_consumer_conforms_to_its_spec(case: Any, fuzzed_apps: dict[str, Flask],
                                            admin_headers: dict[str, str]) -> None:
    call(case, fuzzed_apps["consumer"], admin_headers)


# ---- hypothesis: whatever bytes arrive, 4xx or exactly the valid items stored ---------

DAY = 86400_000
# (field, value) changes that keep a log valid, and (field, value) that break it.
KEEP = [("heart_rate", None), ("location", None), ("user_id", "u-7"), ("user_id", 2**53 - 1),
        ("extra_field", "ignored"),
        ("activity_type", "hiit"), ("distance", 0), ("calories_burned", 20000)]
BREAK = [("heart_rate", 999), ("heart_rate", 24), ("heart_rate", "150"), ("duration", -1),
         ("duration", True), ("distance", 1000.5), ("user_id", -1), ("user_id", ""),
         ("user_id", "u" * 65), ("user_id", 2**53), ("user_id", None), ("user_id", 1.5),
         ("activity_type", "flying"), ("activity_type", None), ("timestamp", "yesterday"),
         ("timestamp", "2026-13-01T00:00:00Z"), ("timestamp", 1_700_000_000),
         ("device_id", ""), ("device_id", "-x"), ("device_id", "a b"),
         ("location", {"latitude": 91, "longitude": 0}), ("location", {"latitude": 0}),
         ("location", [1, 2]), ("activity_status", "done"), ("event_id", "e" * 65),
         ("event_id", "=cmd")]
REQUIRED = ["user_id", "activity_type", "timestamp", "device_id"]


@st.composite
def items(draw: st.DrawFn, index: int) -> tuple[Any, bool, str | None]:
    """One batch item: (document, valid?, field a rejection must name)."""
    doc: dict[str, Any] = seed_log(event_id=f"h{index}")
    doc["timestamp"] = schema.iso_ms(now_ms() - draw(st.integers(0, 29 * DAY)))
    if draw(st.booleans()):  # the same instant written with an offset
        doc["timestamp"] = schema.iso_ms(now_ms() - DAY + 14 * 3600_000)[:19] + "+14:00"
    doc.update(draw(st.lists(st.sampled_from(KEEP), max_size=3)))
    kind = draw(st.sampled_from(["valid", "valid", "break", "missing", "not_object"]))
    if kind == "break":
        f, v = draw(st.sampled_from(BREAK))
        doc[f] = v
        return doc, False, f
    if kind == "missing":
        f = draw(st.sampled_from(REQUIRED))
        del doc[f]
        return doc, False, f
    if kind == "not_object":
        return draw(st.sampled_from([1, "x", None, [doc], True])), False, None
    return doc, True, None


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[Any, bool, str | None]]:
    n = draw(st.integers(1, 6))
    return [draw(items(i)) for i in range(n)]


@pytest.fixture(scope="module")
def ingest_client(fuzzed_apps: dict[str, Flask], ingest_headers: dict[str, str]) -> Any:
    return fuzzed_apps["producer"].test_client(), ingest_headers


def empty(cluster: Any) -> None:
    rc = cluster.admin_client()
    try:
        rc.flushall(target_nodes=rc.get_primaries())
    finally:
        rc.close()


def stored_ids(store: Store) -> set[str]:
    now = now_ms()
    return {str(schema.body_to_dict(b)["event_id"])
            for b in store.export(now - 32 * DAY, now + 2 * DAY, None)}


PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@PROPERTY
@given(batch=batches(), form=st.sampled_from(["array", "ndjson", "gzip"]))
def test_producer_stores_exactly_the_valid_items(ingest_client, cluster, store,
                                                 batch: list[tuple[Any, bool, str | None]],
                                                 form: str) -> None:
    client, headers = ingest_client
    empty(cluster)
    docs = [d for d, _, _ in batch]
    body: str | bytes
    extra: dict[str, str] = {}
    if form == "ndjson":
        body, ctype = "\n".join(json.dumps(d) for d in docs), "application/x-ndjson"
    else:
        body, ctype = json.dumps(docs).encode(), "application/json"
        if form == "gzip":
            body, extra = gzip.compress(body), {"Content-Encoding": "gzip"}
    r = client.post("/v1/activities", data=body, content_type=ctype,
                    headers={**headers, **extra})
    assert r.status_code == 200, r.json
    want = ["created" if ok else "rejected" for _, ok, _ in batch]
    assert [i["status"] for i in r.json["items"]] == want, r.json
    for item, (_, ok, field) in zip(r.json["items"], batch, strict=True):
        if not ok and field is not None:
            assert item["field"] == field, item
    assert stored_ids(store) == {f"h{i}" for i, (_, ok, _) in enumerate(batch) if ok}


@PROPERTY
@given(body=st.one_of(st.binary(max_size=300),
                      st.text(max_size=200).map(str.encode),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                                   | st.text(max_size=20),
                                   lambda c: st.lists(c, max_size=4)
                                   | st.dictionaries(st.text(max_size=12), c, max_size=5),
                                   max_leaves=12).map(lambda v: json.dumps(v).encode()),
                      st.integers(1, 3000).map(lambda d: b"[" * d + b"]" * d),  # deep
                      st.integers(1, 3000).map(lambda d: b'{"x":' + b"[" * d + b"]" * d
                                               + b"}")),
       path=st.sampled_from(["/v1/activities", "/log_activity"]),
       ctype=st.sampled_from(["application/json", "application/x-ndjson", "text/plain"]),
       encoding=st.sampled_from([None, "gzip", "zstd", "br"]))
def test_producer_answers_any_bytes_with_4xx_or_what_it_stored(
        ingest_client, cluster, store, body: bytes, path: str, ctype: str,
        encoding: str | None) -> None:
    client, headers = ingest_client
    empty(cluster)
    extra = {"Content-Encoding": encoding} if encoding else {}
    r = client.post(path, data=body, content_type=ctype, headers={**headers, **extra})
    assert r.is_json
    if 400 <= r.status_code < 500:
        assert stored_ids(store) == set()
        return
    assert r.status_code in (200, 201), r.json
    reported = [i["event_id"] for i in r.json.get("items", [r.json]) if i and "event_id" in i]
    assert stored_ids(store) == set(reported)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.one_of(st.binary(max_size=200), st.builds(
    lambda d: json.dumps(d).encode(),
    st.fixed_dictionaries({}, optional={f: st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=70),
        st.dictionaries(st.sampled_from(["latitude", "longitude"]), st.floats()))
        for f in schema.REQUIRED_SEED_FIELDS + ("event_id",)}))))
def test_schema_raises_only_its_own_errors(raw: bytes) -> None:
    try:
        schema.to_event(schema.decode(raw))
    except InvalidInput as e:
        assert e.status in (400, 422) and e.message


# ---- path parameters: an identifier is accepted only when it is all of the path segment --

IDENTIFIER_TEXT = st.one_of(
    # any character a URL can carry: a lone surrogate (category Cs) has no UTF-8 form
    st.text(st.one_of(st.sampled_from("aZ9._@-\n\r\t /%\x00"),
                      st.characters(exclude_categories=["Cs"])), max_size=70),
    # a valid id with something after it: "u\n" passed a `$`-anchored pattern
    st.tuples(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True),
              st.sampled_from(["", "\n", "\n\n", "\r", "\r\n", " ", "\x00"])).map("".join))


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user_id=IDENTIFIER_TEXT, what=st.sampled_from(["activities", "summary"]))
def test_user_path_parameter_is_a_whole_identifier_or_refused(
        fuzzed_apps: dict[str, Flask], reader_headers: dict[str, str], user_id: str,
        what: str) -> None:
    """``/v1/users/<user_id>/…``: 200 for a whole identifier (echoed unchanged), else 422 or
    404 (a ``/`` makes another route); never 5xx, never "u\n" taken for a user."""
    from urllib.parse import quote

    client = fuzzed_apps["consumer"].test_client()
    r = client.get(f"/v1/users/{quote(user_id, safe='')}/{what}", headers=reader_headers)
    assert r.is_json
    if schema.is_safe_id(user_id):
        assert r.status_code == 200, r.json
        if what == "summary":
            assert r.json["user_id"] == user_id
    else:
        assert r.status_code in (404, 422), (user_id, r.status_code, r.json)
        if r.status_code == 422:
            assert r.json["field"] == "user_id"


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=IDENTIFIER_TEXT)
def test_extractor_path_parameter_is_a_whole_name_or_refused(
        fuzzed_apps: dict[str, Flask], reader_headers: dict[str, str], name: str) -> None:
    from urllib.parse import quote

    from watchlog.api.consumer.extraction import NAME

    client = fuzzed_apps["consumer"].test_client()
    r = client.get(f"/v1/extractors/{quote(name, safe='')}", headers=reader_headers)
    assert r.is_json and r.status_code < 500
    if NAME.fullmatch(name):
        assert r.status_code != 422, r.json
    else:
        assert r.status_code in (404, 422), (name, r.status_code)
        assert r.status_code == 422 or "/" in name or name in ("", ".", "..")


# ---- query parameters: strict ASCII (issue 13 item 12) ---------------------------------

@pytest.fixture(scope="module")
def query_client(cluster_settings: Settings, store: Store) -> Any:
    from watchlog.api.consumer.app import create_app

    s = cluster_settings.replace(consumer_rate_limit="1000000/second")
    return create_app(s, store).test_client()


PARAM_TEXT = st.one_of(st.text(max_size=14), st.from_regex(r"\A[0-9]{1,5}\Z"),
                       st.dates().map(str), st.dates().map(lambda d: f"{d}\n"),
                       st.text(alphabet="0123456789１２３٣-_ +.", max_size=12))


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(value=PARAM_TEXT)
def test_query_parameters_accept_only_their_ascii_form(query_client, reader_headers,
                                                       value: str) -> None:
    """``limit`` passes iff it is ASCII digits in range; a day iff it is YYYY-MM-DD."""
    import re
    from datetime import date

    r = query_client.get("/v1/users/7/activities", query_string={"limit": value},
                         headers=reader_headers)
    ok = value == "" or (re.fullmatch(r"[0-9]{1,18}", value, re.ASCII) is not None
                         and 1 <= int(value) <= cluster_settings_max_page(query_client))
    assert r.status_code == (200 if ok else 422), (value, r.json)
    if not ok:
        assert r.json["field"] == "limit"

    r = query_client.get("/v1/users/7/summary", query_string={"to": value, "from": value},
                         headers=reader_headers)
    try:
        day_ok = value == "" or (re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value, re.ASCII)
                                 is not None and date(1970, 1, 1) <= date.fromisoformat(value)
                                 <= date(9998, 12, 31))
    except ValueError:
        day_ok = False
    assert (r.status_code == 200) == day_ok, (value, r.json)
    if not day_ok:
        assert r.status_code == 422 and r.json["field"] in ("from", "to")


def cluster_settings_max_page(client: Any) -> int:
    return int(client.application.config["SETTINGS"].max_page)


@pytest.mark.parametrize("path", ["/v1/users/0%2F/activities", "/v1/users/0//activities"])
def test_an_empty_path_segment_is_a_json_404_not_a_redirect(consumer, reader_headers,
                                                             path: str) -> None:
    """Werkzeug merges `//` with an HTML 308 to another URL unless told not to.

    Negative control: ``/v1/users/0/activities`` (no empty segment) answers 200.
    """
    r = consumer.get(path, headers=reader_headers)
    assert r.status_code == 404 and r.is_json, (r.status_code, r.data[:200])
    assert consumer.get("/v1/users/0/activities", headers=reader_headers).status_code == 200
