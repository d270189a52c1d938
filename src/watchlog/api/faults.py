"""Delay and failure injected on purpose, controllable per service, route and at run time.

The active spec of a service lives in Redis (``wl:{admin}:faults:<service>``) so that a
``PUT /admin/faults`` reaches every worker process within a second; until one is set, the
``WATCHLOG_FAULT_*`` settings apply. A stored spec carries an HMAC keyed by the admin key,
which only the APIs hold: someone with the apps' Redis password alone cannot switch
faults on (a spec that fails the check is ignored and logged). Decisions come from a
seedable ``random.Random`` (``WATCHLOG_FAULT_SEED``), so a failing run can be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import random
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Literal, cast

import msgspec
from msgspec import Meta
from redis.cluster import RedisCluster

from watchlog.core import metrics
from watchlog.core.errors import InjectedFault, InvalidInput, InvalidSetting, Malformed
from watchlog.core.schema import decode_json
from watchlog.core.settings import Settings

log = logging.getLogger(__name__)
REFRESH_S = 1.0
MAX_SPEC_AGE_S = 24 * 3600  # a spec set at run time lapses after a day (replays lapse too)
EXEMPT = ("/health", "/ready", "/metrics", "/openapi.json", "/docs", "/admin/faults")


MAX_DELAY_S = 30.0  # every injected delay is at most this (docs/chaos.md)
MAX_SIGMA = 5.0  # lognormal spread; far beyond any real tail, and exp() cannot overflow


@lru_cache(maxsize=64)  # called per delayed request with the spec's string
def parse_delay(text: str) -> tuple[str, tuple[float, ...]]:
    kind, *raw = text.split(":")
    try:
        params = tuple(float(x) for x in raw)
    except ValueError:
        raise ValueError(f"delay {text!r}: parameters must be numbers") from None
    arity = {"fixed": 1, "uniform": 2, "lognormal": 2}
    if arity.get(kind) != len(params) or any(x < 0 for x in params):
        raise ValueError(f"delay {text!r}: use fixed:S, uniform:A:B or lognormal:MEDIAN:SIGMA")
    check_delay_bounds(text, kind, params)
    return kind, params


def check_delay_bounds(text: str, kind: str, params: tuple[float, ...]) -> None:
    """Refuse NaN, infinities and delays over ``MAX_DELAY_S`` (they would fail every request:
    ``time.sleep`` raises OverflowError on 1e308, and a NaN or an hour-long sleep is no test).
    """
    if not all(math.isfinite(x) for x in params):
        raise ValueError(f"delay {text!r}: parameters must be finite numbers")
    seconds = params if kind != "lognormal" else params[:1]
    if any(x > MAX_DELAY_S for x in seconds):
        raise ValueError(f"delay {text!r}: at most {MAX_DELAY_S:g} s")
    if kind == "uniform" and params[0] > params[1]:
        raise ValueError(f"delay {text!r}: uniform:A:B needs A <= B")
    if kind == "lognormal" and params[1] > MAX_SIGMA:
        raise ValueError(f"delay {text!r}: lognormal sigma at most {MAX_SIGMA:g}")


class FaultSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    """What to inject: a delay with some probability, and an error with another."""

    delay_p: Annotated[float, Meta(ge=0, le=1)] = 0.0
    delay: str = "uniform:0.5:2"
    abort_p: Annotated[float, Meta(ge=0, le=1)] = 0.0
    abort_status: Literal[500, 502, 503, 504] = 500
    abort_phase: Literal["before", "after", "both"] = "before"
    retry_after: Annotated[int, Meta(ge=0, le=3600)] | None = None
    routes: list[str] = []

    def __post_init__(self) -> None:
        parse_delay(self.delay)
        for route in self.routes:
            if not route.startswith("/") or route.startswith(EXEMPT):
                raise ValueError(f"routes: {route!r} is not a business route (faults never "
                                 f"apply to {', '.join(EXEMPT)})")


PRESETS = {
    "none": FaultSpec(),
    # The seed's consumer: every call sleeps 0.5-2 s, one in five answers 500.
    "seed": FaultSpec(delay_p=1.0, delay="uniform:0.5:2", abort_p=0.2, abort_status=500),
    # A rough day: long-tailed latency and ambiguous write failures.
    "chaos": FaultSpec(delay_p=0.3, delay="lognormal:0.05:1.0", abort_p=0.2, abort_status=503,
                       abort_phase="both", retry_after=1),
}


def from_settings(s: Settings) -> FaultSpec:
    if s.fault_preset not in PRESETS:
        raise InvalidSetting(f"WATCHLOG_FAULT_PRESET={s.fault_preset!r}: one of {sorted(PRESETS)}")
    if s.fault_preset != "none":
        return PRESETS[s.fault_preset]
    routes = [r.strip() for r in s.fault_routes.split(",") if r.strip()]
    raw = {"delay_p": s.fault_delay_p, "delay": s.fault_delay, "abort_p": s.fault_abort_p,
           "abort_status": s.fault_abort_status, "abort_phase": s.fault_abort_phase,
           "retry_after": s.fault_retry_after,
           "routes": routes}
    # convert, not the constructor: a Struct's constructor checks neither ranges nor choices.
    try:
        return msgspec.convert(raw, FaultSpec)
    except msgspec.ValidationError as e:
        raise InvalidSetting(f"WATCHLOG_FAULT_*: {e}") from None


def decode_spec(raw: bytes) -> FaultSpec:
    """Validate a spec sent to ``PUT /admin/faults`` (or a preset: {"preset": "seed"})."""
    try:
        doc = decode_json(raw, dict[str, object])
        preset = doc.get("preset")
        if preset is not None:
            if not isinstance(preset, str) or preset not in PRESETS:
                raise InvalidInput(f"preset: one of {sorted(PRESETS)}", field="preset")
            if len(doc) > 1:  # {"preset": "seed", "abort_p": 1e308} answered 200 as the preset
                raise InvalidInput("preset: send a preset alone, or the fields without one",
                                   field="preset")
            return PRESETS[preset]
        return decode_json(raw, FaultSpec)
    except Malformed:
        raise
    except InvalidInput as err:
        if err.details.get("field") is None:  # raised in __post_init__
            for name in ("delay", "routes"):
                if err.message.startswith(name + " ") or err.message.startswith(name + ":"):
                    err.details["field"] = name
        raise


class Faults:
    """Decide, per request, whether to delay and whether to fail (before or after commit)."""

    def __init__(self, service: str, settings: Settings,
                 rc_getter: Callable[[], RedisCluster]) -> None:
        self.service = service
        self.default = from_settings(settings)
        random_seed = settings.fault_seed
        # Seeded by (seed, service) only: a pid in the seed would make every run differ.
        # Workers of one service then draw the same sequence; a run replays exactly with
        # WATCHLOG_WORKERS=1 and the same order of requests.
        self.rng = random.Random(f"{random_seed}:{service}" if random_seed else None)
        self._rc = rc_getter
        self._cached: tuple[float, FaultSpec] = (0.0, self.default)
        self.key = f"wl:{{admin}}:faults:{service}"
        # Sign with the first admin key, accept any (keys rotate); no admin key: auth is
        # off and the APIs are open anyway, so specs are signed with an empty key.
        admin = [k.strip() for k in settings.admin_key.split(",") if k.strip()] or [""]
        self._keys = [hashlib.sha256(b"watchlog-faults:" + k.encode()).digest() for k in admin]
        self._newest = 0  # issue time (ms) of the newest spec this process applied
        self._ignored: bytes | None = None

    def _sign(self, payload: bytes, key: bytes | None = None) -> bytes:
        mac = hmac.new(key or self._keys[0], self.key.encode() + b"\n" + payload, "sha256")
        return mac.hexdigest().encode()

    def _verify(self, raw: bytes) -> bytes | None:
        """Return the signed payload when its signature is ours and it is still fresh.

        The signed part is ``<spec or null>\n<issued ms>``. A spec issued before one this
        process has already seen, or longer than ``MAX_SPEC_AGE_S`` ago, is a replay (an old
        admin-signed value written back with the Redis password) and is ignored.
        """
        signed, _, sig = raw.rpartition(b"\n")
        payload, _, issued = signed.rpartition(b"\n")
        problem = None
        if not any(hmac.compare_digest(sig, self._sign(signed, k)) for k in self._keys):
            problem = "its signature is not the admin key's"
        elif not issued.isdigit():
            problem = "it carries no issue time"
        elif int(issued) < self._newest:
            problem = "it is older than a spec this process already applied (a replay)"
        elif int(issued) < (time.time() - MAX_SPEC_AGE_S) * 1000:
            problem = f"it was issued more than {MAX_SPEC_AGE_S // 3600} h ago"
        if problem is None:
            self._newest = int(issued)
            return payload
        if self._ignored != raw:  # once per stored value, not once per refresh
            log.error("ignoring the fault spec in %s: %s", self.key, problem)
            self._ignored = raw
        return None

    def current(self, fresh: bool = False) -> FaultSpec:
        """Return the spec in force (re-read at most once a second, or now if ``fresh``)."""
        at, spec = self._cached
        now = time.monotonic()
        if now - at < REFRESH_S and not fresh:
            return spec
        try:
            # The client does not decode replies (no decode_responses): bytes or None.
            raw = cast(bytes | None, self._rc().get(self.key))
            payload = self._verify(raw) if raw else None
            if raw and payload is None:
                spec = self._cached[1]  # forged, replayed or expired: keep what was applied
            elif payload and payload != b"null":
                spec = msgspec.json.decode(payload, type=FaultSpec)
            else:
                spec = self.default
        except Exception:  # noqa: BLE001 - faults must never break a request
            spec = self._cached[1]
        self._cached = (now, spec)
        return spec

    def set(self, spec: FaultSpec | None) -> FaultSpec:
        """Store ``spec`` signed and dated (None: back to the settings' spec, signed too)."""
        payload = b"null" if spec is None else msgspec.json.encode(spec)
        issued = max(int(time.time() * 1000), self._newest + 1)
        signed = payload + b"\n" + str(issued).encode()
        self._rc().set(self.key, signed + b"\n" + self._sign(signed))
        self._newest = issued
        spec = self.default if spec is None else spec
        self._cached = (time.monotonic(), spec)
        return spec

    def applies(self, spec: FaultSpec, route: str) -> bool:
        if route.startswith(EXEMPT):  # never, even when named: faults must stay removable
            return False
        return route in spec.routes if spec.routes else True

    def quiet(self, route: str, spec: FaultSpec | None = None) -> bool:
        """True when no fault can apply to ``route`` now (no draw is made)."""
        spec = spec or self.current()
        return not (spec.delay_p or spec.abort_p) or not self.applies(spec, route)

    def before(self, route: str) -> bool:
        """Maybe sleep, maybe fail now; return True when the abort is due after commit."""
        spec = self.current()
        if self.quiet(route, spec):
            return False
        if spec.delay_p and self.rng.random() < spec.delay_p:
            metrics.FAULTS.labels(self.service, route, "delay").inc()
            time.sleep(self._delay(spec))
        if not (spec.abort_p and self.rng.random() < spec.abort_p):
            return False
        phase = spec.abort_phase
        if phase == "both":
            phase = self.rng.choice(("before", "after"))
        if phase == "after":
            return True
        self.abort(spec, route, "abort_before")
        return False

    def abort(self, spec: FaultSpec | None, route: str, kind: str) -> None:
        spec = spec or self.current()
        metrics.FAULTS.labels(self.service, route, kind).inc()
        when = "after the write was committed" if kind == "abort_after" else "before any work"
        raise InjectedFault(f"injected fault ({when}); retry", status=spec.abort_status,
                            retry_after=spec.retry_after, injected=True)

    def _delay(self, spec: FaultSpec) -> float:
        kind, params = parse_delay(spec.delay)
        if kind == "fixed":
            return params[0]
        if kind == "uniform":
            return self.rng.uniform(params[0], params[1])
        return min(MAX_DELAY_S, self.rng.lognormvariate(_ln(params[0]), params[1]))


def _ln(x: float) -> float:
    return math.log(max(x, 1e-6))
