"""Query-string parameters: parsed strictly, every error naming the parameter.

Strict means ASCII only and the whole value: ``int()`` and ``date.fromisoformat`` would take
full-width or other Unicode digits, surrounding spaces, ``1_000``, or (sliced) a date with
trailing text; every parameter here is matched in full against an ASCII pattern first.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

from flask import request

from watchlog.core.errors import InvalidInput
from watchlog.core.keys import DAY_MS
from watchlog.core.schema import TYPE_CODE

# Times and days outside these bounds would overflow date arithmetic (a 500): refuse them.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)
MAX_MS = 253370764800000  # 9999-01-01T00:00:00Z
_INT = re.compile(r"-?[0-9]{1,18}", re.ASCII)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
# ISO-8601 as the API documents it: a date, or a date and time with optional fraction and
# offset (Z or +hh:mm); `T` or a space between them.
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
                   r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
                   r"(Z|[+-][0-9]{2}:?[0-9]{2})?)?", re.ASCII)


def arg(name: str, values: Mapping[str, str] | None = None) -> str | None:
    """Return a raw parameter (of the query string, or ``values``: a form's fields),
    refusing anything but printable ASCII."""
    raw = (request.args if values is None else values).get(name)
    if raw is not None and not (raw.isascii() and raw.isprintable()):
        raise InvalidInput(f"{name}: only printable ASCII is accepted", field=name)
    return raw


def flag(name: str) -> bool:
    """Parse a boolean parameter: true/false/1/0 (absent: false)."""
    raw = arg(name)
    if raw is None or raw in ("", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise InvalidInput(f"{name}: true or false", field=name)


def time_ms(name: str, default: int) -> int:
    """Parse an ISO-8601 time, a date (its start) or epoch ms; UTC when no offset."""
    raw = arg(name)
    if raw is None or raw == "":
        return default
    try:
        if raw.isdigit():
            ms = int(raw)
        else:
            if not _TIME.fullmatch(raw):
                raise ValueError(raw)
            t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            ms = int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp() * 1000)
    except (ValueError, OverflowError):
        raise InvalidInput(f"{name}: {raw!r} is not ISO-8601, a date or epoch ms",
                           field=name) from None
    if not 0 <= ms < MAX_MS:
        raise InvalidInput(f"{name}: must be between {FIRST_DAY} and {LAST_DAY}", field=name)
    return ms


def day(name: str, default: date, values: Mapping[str, str] | None = None) -> date:
    raw = arg(name, values)
    if not raw:
        return default
    try:
        if not _DAY.fullmatch(raw):
            raise ValueError(raw)
        d = date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{name}: {raw!r} is not a date (YYYY-MM-DD)", field=name) from None
    if not FIRST_DAY <= d <= LAST_DAY:
        raise InvalidInput(f"{name}: must be between {FIRST_DAY} and {LAST_DAY}", field=name)
    return d


def integer(name: str, default: int, lo: int, hi: int) -> int:
    raw = arg(name)
    if raw is None or raw == "":
        return default
    try:
        if not _INT.fullmatch(raw):
            raise ValueError(raw)
        v = int(raw)
    except ValueError:
        raise InvalidInput(f"{name}: {raw!r} is not an integer", field=name) from None
    if not lo <= v <= hi:
        raise InvalidInput(f"{name}: must be between {lo} and {hi}", field=name)
    return v


def activity_type(values: Mapping[str, str] | None = None) -> int | None:
    raw = arg("activity_type", values)
    if not raw:
        return None
    if raw not in TYPE_CODE:
        raise InvalidInput(f"activity_type: {raw!r} is not one of {', '.join(TYPE_CODE)}",
                           field="activity_type")
    return TYPE_CODE[raw]


def time_range(max_days: int, default_span_ms: int = DAY_MS) -> tuple[int, int]:
    """Return a closed [from, to] range in ms, default the last ``default_span_ms``."""
    to = time_ms("to", int(time.time() * 1000))
    start = time_ms("from", to - default_span_ms)
    _check_range(start > to, (to - start) / DAY_MS, max_days)
    return start, to


def days_between(start: date, to: date, max_days: int) -> list[date]:
    """Return the days from ``start`` to ``to``, both included, checked as every range."""
    _check_range(start > to, (to - start).days + 1, max_days)
    return [start + timedelta(days=i) for i in range((to - start).days + 1)]


def _check_range(reversed_: bool, width_days: float, max_days: int) -> None:
    """The one check of every range a query takes: in order, and at most ``max_days``."""
    if reversed_:
        raise InvalidInput("from: must not be after to", field="from")
    if width_days > max_days:
        raise InvalidInput(f"to: range wider than {max_days} days (WATCHLOG_MAX_RANGE_DAYS)",
                           field="to")


def today() -> date:
    return datetime.now(UTC).date()
