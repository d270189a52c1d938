"""The client of the APIs' ``/admin/faults`` endpoint (``watchlog chaos faults``)."""

from __future__ import annotations

from typing import Any

from watchlog.clients.http import Client, RetryPolicy, error_message, require_token
from watchlog.core.errors import GaveUp


def admin_client(url: str) -> Client:
    """Return a retrying client of one API with the admin key (env or credentials file)."""
    # Admin calls are never faulted, but the API may be restarting: a short budget.
    return Client(url, require_token("admin"), policy=RetryPolicy(attempts=4, deadline=10.0))


def call(url: str, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """GET, PUT or DELETE the fault spec of the API at ``url``; return the spec in force."""
    with admin_client(url) as client:
        resp = client.request(method, "/admin/faults", json=body)
    if resp.status_code != 200:
        raise GaveUp(f"{url}: {error_message(resp)}", resp)
    spec: dict[str, Any] = resp.json()
    return spec
