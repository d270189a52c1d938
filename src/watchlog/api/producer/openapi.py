"""The producer's OpenAPI description."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from watchlog.api.openapi import OPS_PATHS, document, errors, json_ok

ACTIVITY = {"$ref": "#/components/schemas/Activity"}
RESULT = {"type": "object", "required": ["status", "event_id"], "properties": {
    "status": {"type": "string", "enum": ["created", "duplicate"]},
    "event_id": {"type": "string"}}}
BATCH = {"type": "object", "required": ["created", "duplicate", "rejected", "items"],
         "properties": {"created": {"type": "integer"}, "duplicate": {"type": "integer"},
                        "rejected": {"type": "integer"},
                        "items": {"type": "array", "items": {"type": "object"}}}}

SEED_ERROR = {"type": "object", "required": ["error", "message"], "properties": {
    "error": {"type": "string"}, "message": {"type": "string"},
    "field": {"type": "string"}}}  # {"error": "Missing fields: ..."} as the seed, + message


@lru_cache(maxsize=1)
def producer_spec() -> dict[str, Any]:
    body = {"required": True, "content": {
        "application/json": {"schema": {"oneOf": [
            ACTIVITY, {"type": "array", "items": ACTIVITY, "minItems": 1}]}},
        "application/x-ndjson": {"schema": {"type": "string"}}}}
    paths = {
        "/v1/activities": {"post": {
            "summary": "Store one activity log, or a batch (JSON array or NDJSON)",
            "description": "gzip or zstd bodies are accepted (Content-Encoding). A resend "
                           "with the same event_id (or the same content) is a duplicate.",
            "requestBody": body,
            "responses": {"201": json_ok(RESULT, "created"), "200": json_ok(
                {"oneOf": [RESULT, BATCH]}, "duplicate, or a batch's per-item results"),
                **errors(400, 401, 403, 408, 413, 415, 422, 429, 503)}}},
        "/log_activity": {"post": {
            "summary": "The original endpoint: one log with every field present",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": ACTIVITY}}},
            "responses": {"200": json_ok({"type": "object", "properties": {
                "message": {"type": "string"}}}),
                **errors(401, 403, 408, 413, 422, 429, 503),
                "400": json_ok(SEED_ERROR, "the seed's own errors: bad JSON, missing fields")}}},
        **OPS_PATHS,
    }
    return document("watchlog producer", paths, {})
