"""OpenAPI 3 pieces both services share; schemas come from the same msgspec types."""

from __future__ import annotations

import html
from functools import lru_cache
from typing import Any

import msgspec

from watchlog import __version__
from watchlog.core.schema import Activity

ERROR = {"type": "object", "required": ["error", "message"], "properties": {
    "error": {"type": "string"}, "message": {"type": "string"},
    "field": {"type": "string"}}}
BEARER = {"bearer": {"type": "http", "scheme": "bearer"}}


@lru_cache(maxsize=1)
def activity_components() -> dict[str, Any]:
    """Return the JSON Schema components of the activity log, from ``schema.Activity``."""
    (_ref,), components = msgspec.json.schema_components(
        [Activity], ref_template="#/components/schemas/{name}")
    return components


def stored_activity() -> dict[str, Any]:
    """The activity as the consumer returns it: the seed fields plus event_id."""
    props = dict(activity_components()["Activity"]["properties"])
    props["timestamp"] = {"type": "string", "format": "date-time"}
    props["heart_rate"] = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    props["event_id"] = {"type": "string"}
    return {"type": "object", "properties": props,
            "required": ["event_id", "user_id", "activity_type", "timestamp"]}


def errors(*statuses: int) -> dict[str, Any]:
    text = {400: "malformed request", 401: "missing or wrong credentials",
            403: "not allowed for these credentials", 404: "not found",
            408: "request body too slow (WATCHLOG_BODY_TIMEOUT, WATCHLOG_BODY_MIN_RATE)",
            409: "conflicts with what exists (an extractor, the extractor cap)",
            413: "over a size limit", 415: "unsupported content type",
            422: "invalid fields", 429: "rate limited", 500: "injected fault or bug",
            503: "store unavailable; retry"}
    return {str(s): {"description": text[s], "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for s in statuses}


def document(title: str, paths: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": __version__},
        "paths": paths,
        "components": {"schemas": {**activity_components(), "Error": ERROR, **schemas},
                       "securitySchemes": BEARER},
        "security": [{"bearer": []}],
    }


def json_ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


OPEN: dict[str, Any] = {"security": []}
OPS_PATHS: dict[str, Any] = {
    "/health": {"get": {**OPEN, "summary": "The process is alive",
                        "responses": {"200": json_ok({"type": "object"})}}},
    "/ready": {"get": {**OPEN, "summary": "The cluster is reachable and ok",
                       "responses": {"200": json_ok({"type": "object"}),
                                     "503": json_ok({"type": "object"}, "not ready")}}},
    "/metrics": {"get": {**OPEN, "summary": "Prometheus metrics", "responses": {
        "200": {"description": "exposition text", "content": {"text/plain": {
            "schema": {"type": "string"}}}}}}},
    "/admin/faults": {
        "get": {"summary": "The fault spec in force", "responses": {
            "200": json_ok({"type": "object"}), **errors(401, 403)}},
        "put": {"summary": "Set faults (a spec, or {\"preset\": \"seed\"})",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"type": "object"}}}},
                "responses": {"200": json_ok({"type": "object"}),
                              **errors(400, 401, 403, 422, 503)}},
        "delete": {"summary": "Back to the WATCHLOG_FAULT_* settings", "responses": {
            "200": json_ok({"type": "object"}), **errors(401, 403, 503)}},
    },
}


# Swagger UI, from the swagger-ui-py package's files: /docs needs no network. Only these
# assets are served; the page's script is a file too, so the CSP can forbid inline scripts.
UI_ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript",
             "favicon-32x32.png": "image/png"}
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")
DOCS_INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
    persistAuthorization: false, displayRequestDuration: true, tryItOutEnabled: false
  });
};
"""


def ui_asset(name: str) -> bytes | None:
    """Return one of Swagger UI's files from the installed package, or None."""
    if name not in UI_ASSETS:
        return None
    from importlib.resources import files

    return files("swagger_ui").joinpath("static", name).read_bytes()


def _table(spec: dict[str, Any]) -> str:
    """Return every operation of a spec as an HTML table (the page without JavaScript)."""
    rows = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            params = ", ".join(p["name"] for p in op.get("parameters", []))
            codes = ", ".join(op.get("responses", {}))
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>"
                        f"{html.escape(path)}</code></td><td>{html.escape(op.get('summary', ''))}"
                        f"</td><td>{html.escape(params)}</td><td>{codes}</td></tr>")
    return ("<table><tr><th>method</th><th>path</th><th>what</th><th>parameters</th>"
            "<th>statuses</th></tr>" + "".join(rows) + "</table>")


def render_docs(spec: dict[str, Any]) -> str:
    """Return the interactive page of a spec (Swagger UI: request bodies, bearer auth)."""
    title = html.escape(spec["info"]["title"])
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
            "<link rel=stylesheet href=/docs/static/swagger-ui.css>"
            "<link rel=icon type=image/png href=/docs/static/favicon-32x32.png></head><body>"
            f"<noscript><h1>{title}</h1><p>Machine-readable: <a href=/openapi.json>"
            f"/openapi.json</a></p>{_table(spec)}</noscript><div id=swagger-ui></div>"
            "<script src=/docs/static/swagger-ui-bundle.js></script>"
            "<script src=/docs/init.js></script></body></html>")
