"""The consumer's OpenAPI description."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from watchlog.api.openapi import OPS_PATHS, document, errors, json_ok, stored_activity
from watchlog.core.schema import ACTIVITY_TYPES, SAFE_ID


def q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "pattern": SAFE_ID}}


RANGE = [q("from", "ISO-8601 time, date or epoch ms (default: to - 24 h)"),
         q("to", "ISO-8601 time, date or epoch ms (default: now)")]
TYPE = q("activity_type", "only this type", {"type": "string", "enum": list(ACTIVITY_TYPES)})
ITEM = {"$ref": "#/components/schemas/StoredActivity"}
TOTALS = {"type": "object", "properties": {
    "count": {"type": "integer"}, "duration": {"type": "integer"},
    "distance": {"type": "number"}, "calories_burned": {"type": "number"},
    "avg_heart_rate": {"type": "number", "nullable": True},
    "max_heart_rate": {"type": "integer", "nullable": True}}}
SUMMARY = {"type": "object", "properties": {
    "total": TOTALS, "by_type": {"type": "object", "additionalProperties": TOTALS}}}
EXTRACTOR = {"type": "object", "properties": {
    "name": {"type": "string"}, "lag": {"type": "integer"}, "pending": {"type": "integer"}}}
READ_ERRORS = (400, 401, 403, 422, 503)
LIMITED = (*READ_ERRORS, 429)  # WATCHLOG_CONSUMER_RATE_LIMIT
BODY = (408, 413)  # a body too slow or too large


def _get(summary: str, parameters: list[dict[str, Any]], ok: dict[str, Any],
         *extra: int) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": parameters,
                    "responses": {"200": ok, **errors(*READ_ERRORS, *extra)}}}


def _extractor_paths() -> dict[str, Any]:
    name = path_param("name")
    return {
        "/v1/extractors": _get("Every extractor with its lag", [], json_ok(
            {"type": "object", "properties": {"items": {"type": "array", "items": EXTRACTOR}}}),
            429),
        "/v1/extractors/{name}": {
            **_get("An extractor's lag and pending count", [name], json_ok(EXTRACTOR), 404,
                   429),
            "put": {"summary": "Create an extractor (409 when it exists, unless reset=true; "
                               "409 past WATCHLOG_MAX_EXTRACTORS)",
                    "parameters": [name, q("reset", "true: start an existing one again",
                                           {"type": "string", "enum": ["true", "false"]})],
                    "requestBody": {"required": False, "content": {"application/json": {
                        "schema": {"type": "object", "properties": {"start": {
                            "type": "string", "enum": ["earliest", "latest"]}}}}}},
                    "responses": {"200": json_ok(EXTRACTOR),
                                  **errors(*LIMITED, 409, *BODY)}},
            "delete": {"summary": "Delete an extractor", "parameters": [name],
                       "responses": {"200": json_ok({"type": "object"}),
                                     **errors(*LIMITED, 404)}}},
        "/v1/extractors/{name}/batches": {"post": {
            "summary": "Next batch: redeliveries past the visibility timeout, then new logs",
            "parameters": [name, q("max", "most logs", {"type": "integer", "minimum": 1}),
                           q("consumer", "consumer name within the extractor"),
                           q("visibility_timeout", "seconds before redelivery",
                             {"type": "integer", "minimum": 1, "maximum": 3600})],
            "responses": {"200": json_ok({"type": "object", "properties": {
                "items": {"type": "array", "items": ITEM},
                "redelivered": {"type": "integer"}}}), **errors(*LIMITED, 404, *BODY)}}},
        "/v1/extractors/{name}/ack": {"post": {
            "summary": "Acknowledge delivered logs by feed_id",
            "parameters": [name],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["ids"], "properties": {
                    "ids": {"type": "array", "items": {"type": "string"}}}}}}},
            "responses": {"200": json_ok({"type": "object", "properties": {
                "acknowledged": {"type": "integer"}, "acked": {"type": "integer"},
                "not_acked": {"type": "array", "items": {"type": "string"},
                              "description": "ids that were not pending: already "
                                             "acknowledged, never delivered, or unknown"}}}),
                **errors(*LIMITED, 404, *BODY)}}},
    }


@lru_cache(maxsize=1)
def consumer_spec() -> dict[str, Any]:
    page = {"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": ITEM},
        "next_cursor": {"type": "string", "nullable": True}}}
    user = path_param("user_id")
    paths = {
        "/v1/users/{user_id}/activities": _get(
            "A user's logs in event-time order, paginated",
            [user, *RANGE, TYPE, q("limit", "page size", {"type": "integer", "minimum": 1}),
             q("cursor", "next_cursor of the previous page")], json_ok(page)),
        "/v1/users/{user_id}/summary": _get(
            "A user's totals per day and per activity type",
            [user, q("from", "first day (default: to - 6 days)"),
             q("to", "last day (default: today)")], json_ok(SUMMARY), 429),
        "/v1/reports/daily": _get("Fleet-wide figures of one UTC day",
                                  [q("date", "YYYY-MM-DD (default: today)")], json_ok(SUMMARY),
                                  429),
        "/v1/activities/export": _get(
            "Every log of a range in event-time order, streamed",
            [*RANGE, TYPE, q("format", "ndjson, csv or parquet (docs/formats.md)", {
                "type": "string", "enum": ["ndjson", "csv", "parquet"]})],
            {"description": "streamed logs", "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string",
                                                              "format": "binary"}},
                "text/csv": {"schema": {"type": "string"}}}}, 429),
        "/activity_logs": _get(
            "The seed's list by arrival, oldest first: the latest logs, or what arrived "
            "after a cursor",
            [q("limit", "how many (default 100)", {"type": "integer", "minimum": 1}),
             q("after", "X-Next-Cursor of a previous answer: only what arrived since")],
            {**json_ok({"type": "array", "items": ITEM}), "headers": {
                "X-Next-Cursor": {"description": "pass as ?after= to get what arrives next",
                                  "schema": {"type": "string"}},
                "Link": {"description": "the same, as a rel=\"next\" link",
                         "schema": {"type": "string"}}}}),
        **_extractor_paths(),
        **OPS_PATHS,
    }
    paths["/activity_logs"]["get"]["responses"]["404"] = json_ok(  # the seed's own answer
        {"type": "object", "required": ["message"], "properties": {
            "message": {"type": "string"}}}, "nothing at all is stored")
    return document("watchlog consumer", paths, {"StoredActivity": stored_activity()})
