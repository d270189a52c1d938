"""Pure helpers to read Grafana dashboards: panels, and their queries ready to send to Prometheus.

Grafana expands variables before a query reaches Prometheus; to check a dashboard's PromQL
against a real server we do the same, choosing the value Grafana sends for "All" (the
variable's ``allValue`` regex), so each query covers every series the dashboard can show.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# Grafana's built-in interval variables, at values that suit a 5 s scrape: a 1m rate window
# holds ~12 samples, so a Prometheus that scraped for 30 s already answers every query.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "__range_s": "300",
    "__interval_ms": "15000",
}

# $var, ${var} and ${var:format} (Grafana's three spellings; [[var]] is deprecated, not used).
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every panel that shows data, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from iter_panels({"panels": panel.get("panels", [])})
        else:
            yield panel


def variable_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """Map each template variable to the text Grafana sends when "All" is selected."""
    values = dict(BUILTINS)
    for var in dashboard.get("templating", {}).get("list", []):
        # Without an explicit allValue Grafana sends (a|b|c); any regex matching all of them
        # has the same effect on =~ matchers.
        values[var["name"]] = var.get("allValue") or ".*"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    """Expand Grafana variables in ``expr``; an unknown variable raises ``KeyError``."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (panel title, expr with variables substituted) for every query of every panel."""
    values = variable_values(dashboard)
    queries = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr") and not target.get("hide"):
                queries.append((panel.get("title", ""), substitute(target["expr"], values)))
    return queries


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (variable name, series selector) for every ``label_values(selector, label)``."""
    values = variable_values(dashboard)
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        match = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", query)
        if match:
            out.append((var["name"], substitute(match.group(1), values)))
    return out
