"""``watchlog chaos verify``: a Jepsen-style checker of the whole system, over HTTP only.

An independent client writes logs with its own event ids (single POSTs and batches, a share
of them sharing one millisecond and one user), keeps its own ledger of every answer, runs a
*nemesis* against the local cluster meanwhile, lets the system heal, and reads everything
back through the consumer API: the export, each user's cursor pages and summary, the daily
report, and an extractor created for the run. Then it classifies every log it sent:

- **acknowledged**: answered ``created`` or ``duplicate``; it must be in every read view once;
- **lost**: acknowledged, yet missing from a view;
- **duplicated**: in a view more than once (or an extractor delivered it again after its ack);
- **indeterminate**: never answered for sure (5xx, timeout, connection error until the retry
  budget ran out): stored once or absent are both fine, twice is not;
- **phantom**: in a view but never sent, rejected, or stored with other content;
- **misreported**: the first send ever of a log was answered ``duplicate``;
- **miscounted**: a user's summary or the daily report disagrees with the logs read back.

Nothing here imports the store: the checker sees only what a client sees.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from watchlog.core.errors import VerifyError
from watchlog.core.keys import DAY_MS
from watchlog.core.schema import ACTIVITY_TYPES, iso_ms

if TYPE_CHECKING:  # nemesis imports this module
    from watchlog.launcher.nemesis import Harm

__all__ = ["NEMESES", "Options", "VerifyError", "failed", "judge", "run_checker"]

NEMESES = ("none", "faults", "kill-master", "freeze-replica", "pause-master", "reshard",
           "restart-all", "kill-extractor", "grow-shrink")
# Seconds a nemesis usually takes (node timeout 3 s): the writes are spread over this much.
EXPECTED_S = {"none": 3, "faults": 6, "kill-master": 9, "freeze-replica": 13,
              "pause-master": 9, "reshard": 5, "restart-all": 6, "kill-extractor": 6,
              "grow-shrink": 14}
FAULTS = {"abort_p": 0.25, "abort_phase": "both", "abort_status": 503,
          "delay_p": 0.2, "delay": "uniform:0:0.05"}
Doc = dict[str, Any]


@dataclass
class Options:
    producer_url: str
    consumer_url: str
    state_dir: Path
    nemesis: str = "none"
    count: int = 3000
    writers: int = 4
    random_seed: int | None = None
    day: date | None = None
    duration: float | None = None  # seconds over which the writes are spread
    budget: float = 90.0  # seconds a request is retried before its logs are indeterminate
    heal_timeout: float = 90.0
    hold: float = 1.5  # freeze-replica: seconds of writes while the replica is flagged failed


# -- the workload ------------------------------------------------------------------------


@dataclass
class Unit:
    """One request: a single log (a JSON object) or a batch (a JSON array)."""

    docs: list[Doc]
    single: bool


def workload(run: str, count: int, day: date, rng: random.Random) -> list[Unit]:
    """Return ``count`` logs of the run, in single POSTs (~40 %) and batches of 2-40."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    users = [f"{run}-u{k}" for k in range(max(4, count // 75))]
    docs: list[Doc] = []
    for i in range(count):
        if docs and rng.random() < 0.25:  # the same user, the same millisecond
            user, ts = docs[-1]["user_id"], docs[-1]["_ts"]
        else:
            user, ts = rng.choice(users), start + rng.randrange(DAY_MS)
        docs.append({"event_id": f"{run}-{i}", "user_id": user, "_ts": ts,
                     "activity_type": rng.choice(ACTIVITY_TYPES),
                     "duration": rng.randint(0, 7200), "distance": round(rng.uniform(0, 30), 3),
                     "heart_rate": rng.choice([None, rng.randint(60, 190)]),
                     "calories_burned": round(rng.uniform(0, 900), 1),
                     "location": {"latitude": 1.5, "longitude": 2.5},
                     "device_id": f"{run}-w{i % 7}", "activity_status": "completed"})
    for d in docs:
        d["timestamp"] = iso_ms(d["_ts"])
    units, i = [], 0
    while i < len(docs):
        n = 1 if rng.random() < 0.4 else rng.randint(2, 40)
        units.append(Unit(docs[i:i + n], single=n == 1))
        i += n
    return units


def wire(doc: Doc) -> Doc:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


# -- the ledger --------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the client knows: every log sent and the answers it got."""

    sent: dict[str, Doc] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    created: int = 0
    duplicate: int = 0
    misreported: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    error_times: list[float] = field(default_factory=list)
    samples: dict[str, list[str]] = field(default_factory=dict)  # a few messages per kind
    ack_times: list[tuple[float, int]] = field(default_factory=list)
    send_times: list[float] = field(default_factory=list)  # each attempt's start
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def error(self, kind: str, message: str = "") -> None:
        with self.lock:
            self.errors[kind] += 1
            self.error_times.append(time.monotonic())
            seen = self.samples.setdefault(kind, [])
            if message and len(seen) < 3 and message not in seen:
                seen.append(message)

    def answer(self, unit: Unit, statuses: list[str], first: bool, code: int) -> None:
        """Record the per-log answers of a final (non-retried) response."""
        now = time.monotonic()
        with self.lock:
            acked = 0
            for doc, status in zip(unit.docs, statuses, strict=True):
                eid = doc["event_id"]
                if status in ("created", "duplicate"):
                    acked += 1
                    self.acked.add(eid)
                    self.created += status == "created"
                    self.duplicate += status == "duplicate"
                    if status == "duplicate" and first:
                        self.misreported.add(eid)
                else:
                    self.rejected.add(eid)
            if code >= 400:
                self.errors[str(code)] += 1
                self.error_times.append(now)
            if acked:
                self.ack_times.append((now, acked))


def send(http: httpx.Client, url: str, unit: Unit, ledger: Ledger, budget: float) -> None:
    """Send one unit until it is answered for sure or ``budget`` seconds ran out."""
    body: Doc | list[Doc] = wire(unit.docs[0]) if unit.single else [wire(d) for d in unit.docs]
    with ledger.lock:
        for d in unit.docs:
            ledger.sent[d["event_id"]] = d
    deadline, attempt = time.monotonic() + budget, 0
    while True:
        delay = 0.05 * 2 ** min(attempt, 4)
        with ledger.lock:
            ledger.send_times.append(time.monotonic())
        try:
            r = http.post(url + "/v1/activities", json=body)
        except httpx.TimeoutException as e:
            ledger.error("timeout", f"{type(e).__name__} {e}")
        except httpx.TransportError as e:
            ledger.error("connection", f"{type(e).__name__} {e}")
        else:
            if r.status_code in (200, 201):
                ledger.answer(unit, statuses(unit, r), attempt == 0, r.status_code)
                return
            if r.status_code != 429 and r.status_code < 500:
                ledger.answer(unit, ["rejected"] * len(unit.docs), attempt == 0, r.status_code)
                return
            ledger.error(str(r.status_code), r.text[:300])
            delay = min(float(r.headers.get("Retry-After") or delay), 1.0)
        attempt += 1
        if time.monotonic() + delay > deadline:
            return  # indeterminate: left for the read-back to tell
        time.sleep(random.uniform(0, delay))


def statuses(unit: Unit, r: httpx.Response) -> list[str]:
    doc = r.json()
    if unit.single:
        return [doc.get("status", "created")]
    return [item["status"] for item in doc["items"]]


def write_all(opts: Options, units: list[Unit], ledger: Ledger, token: str,
              seconds: float) -> tuple[float, float]:
    """Send every unit from ``opts.writers`` threads, paced over ``seconds``."""
    started = time.monotonic()
    step = seconds / max(1, len(units))
    nxt = iter(range(len(units)))
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"},
                          timeout=httpx.Timeout(15.0, connect=2.0)) as http:
            while True:
                with lock:
                    k = next(nxt, None)
                if k is None:
                    return
                wait = started + k * step - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                send(http, opts.producer_url, units[k], ledger, opts.budget)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(opts.writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return started, time.monotonic()


def longest_stall(ack_times: list[float], start: float, end: float) -> float:
    """Return the longest time without an acknowledgement between ``start`` and ``end``."""
    times = [start, *sorted(t for t in ack_times if start <= t <= end), end]
    return max(b - a for a, b in zip(times, times[1:], strict=False))


# -- reading back through the consumer API -----------------------------------------------


class Reader:
    """GETs and POSTs to the consumer API with the reader key, retried while it heals."""

    def __init__(self, url: str, token: str, deadline: float = 60.0) -> None:
        self.http = httpx.Client(base_url=url, timeout=httpx.Timeout(30.0, connect=2.0),
                                 headers={"Authorization": f"Bearer {token}"})
        self.deadline = deadline

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        end = time.monotonic() + self.deadline
        while True:
            try:
                r = self.http.request(method, path, **kw)
                if r.status_code < 400:
                    return r.json()
                why = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code < 500 and r.status_code != 429:
                    raise VerifyError(f"{method} {path}: {why}")
            except httpx.TransportError as e:
                why = f"{type(e).__name__}: {e}"
            if time.monotonic() > end:
                raise VerifyError(f"{method} {path}: {why}")
            time.sleep(0.3)

    def export(self, start: int, to: int) -> list[Doc]:
        """Every log of the range, streamed as NDJSON (retried whole on a failure)."""
        end = time.monotonic() + self.deadline
        while True:
            try:
                with self.http.stream("GET", "/v1/activities/export",
                                      params={"from": start, "to": to, "format": "ndjson"}) as r:
                    if r.status_code == 200:
                        return [json.loads(ln) for ln in r.iter_lines() if ln.strip()]
                    why = f"HTTP {r.status_code}"
            except (httpx.TransportError, json.JSONDecodeError) as e:
                why = f"{type(e).__name__}: {e}"
            if time.monotonic() > end:
                raise VerifyError(f"export: {why}")
            time.sleep(0.3)

    def pages(self, user: str, start: int, to: int) -> list[Doc]:
        """A user's logs of the range, following ``next_cursor`` page by page."""
        out: list[Doc] = []
        params: dict[str, int | str] = {"from": start, "to": to, "limit": 25}
        while True:
            doc = self.call("GET", f"/v1/users/{user}/activities", params=params)
            out += doc["items"]
            if not doc.get("next_cursor"):
                return out
            params["cursor"] = doc["next_cursor"]


@dataclass
class Extraction:
    """The run's own extractor, drained over HTTP: what was delivered after each ack."""

    reader: Reader
    name: str
    delivered: list[Doc] = field(default_factory=list)
    acked_feed: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    redelivered_after_ack: int = 0
    ack_shortfall: int = 0

    def create(self) -> None:
        self.reader.call("PUT", f"/v1/extractors/{self.name}", json={"start": "latest"})

    def drain(self, want: set[str], timeout: float = 60.0) -> None:
        """Take and ack batches until every id of ``want`` came and nothing is pending.

        Other clients may keep writing (the simulator): the feed never runs dry then, so
        the run's own ids tell when to stop. An empty batch with nothing pending ends it
        too (a wanted id that never comes is then missing from this view); so does
        ``timeout``.
        """
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            doc = self.reader.call("POST", f"/v1/extractors/{self.name}/batches",
                                   params={"max": 500, "consumer": "verify",
                                           "visibility_timeout": 2})
            items = doc["items"]
            if items:
                self._take(items)
            if items and not want <= self.event_ids:
                continue
            info = self.reader.call("GET", f"/v1/extractors/{self.name}")
            if not info.get("pending"):
                return
            time.sleep(0.5)  # unacknowledged items come back after the visibility timeout

    @property
    def event_ids(self) -> set[str]:
        return {str(d["event_id"]) for d in self.delivered}

    def _take(self, items: list[Doc]) -> None:
        ids = [it["feed_id"] for it in items]
        for it in items:
            fid = it["feed_id"]
            if fid in self.acked_feed:  # delivered again after its ack: a duplicate
                self.redelivered_after_ack += 1
                self.delivered.append(it)
            elif fid not in self.seen:  # a redelivery of an unacknowledged one is fine
                self.seen.add(fid)
                self.delivered.append(it)
        doc = self.reader.call("POST", f"/v1/extractors/{self.name}/ack", json={"ids": ids})
        not_acked = set(doc.get("not_acked", ()))
        self.ack_shortfall += len(not_acked)
        self.acked_feed.update(fid for fid in ids if fid not in not_acked)

    def delete(self) -> None:
        self.reader.call("DELETE", f"/v1/extractors/{self.name}")


# -- the verdict -------------------------------------------------------------------------


def ts_ms(doc: Doc) -> int:
    t = datetime.fromisoformat(str(doc["timestamp"]).replace("Z", "+00:00"))
    return int(t.timestamp() * 1000 + 0.5)


def same(sent: Doc, got: Doc) -> bool:
    """Return True when a log read back carries what was sent."""
    return bool(str(got.get("user_id")) == sent["user_id"]
                and got.get("activity_type") == sent["activity_type"]
                and got.get("duration") == sent["duration"] and ts_ms(got) == sent["_ts"])


def judge(sent: dict[str, Doc], acked: set[str], rejected: set[str],
          views: dict[str, list[Doc]]) -> dict[str, Any]:
    """Classify every log sent against what each read view returned (see the module doc)."""
    seen = {name: Counter(d["event_id"] for d in docs) for name, docs in views.items()}
    lost = {e for e in acked if any(c[e] == 0 for c in seen.values())}
    dup = {e for c in seen.values() for e, n in c.items() if n > 1}
    phantom = {d["event_id"] for docs in views.values() for d in docs
               if d["event_id"] not in sent or d["event_id"] in rejected
               or not same(sent[d["event_id"]], d)}
    unsure = set(sent) - acked - rejected
    stored = {e for e in unsure if all(c[e] == 1 for c in seen.values())}
    absent = {e for e in unsure if all(c[e] == 0 for c in seen.values())}
    partial = unsure - stored - absent - dup
    ids = {"lost": sorted(lost), "duplicated": sorted(dup), "phantom": sorted(phantom),
           "indeterminate_partial": sorted(partial)}
    return {
        **{k: len(v) for k, v in ids.items()},
        "indeterminate": len(unsure), "indeterminate_stored_once": len(stored),
        "indeterminate_absent": len(absent),
        "missing_by_view": {n: sum(1 for e in acked if c[e] == 0) for n, c in seen.items()},
        "ids": ids,
    }


def miscounted(summaries: dict[str, int], pages: dict[str, list[Doc]], report: int,
               export_day: int) -> list[str]:
    """Return the aggregates that disagree with the logs read back."""
    off = [f"summary of {u}: {n} logs, pages hold {len(pages[u])}"
           for u, n in summaries.items() if n != len(pages[u])]
    if report != export_day:
        off.append(f"daily report: {report} logs, the export holds {export_day}")
    return off


FAILURES = ("lost", "duplicated", "phantom", "misreported", "miscounted",
            "indeterminate_partial")


def failed(result: dict[str, Any]) -> list[str]:
    """Return the names of the checks that failed (each a count in ``result``)."""
    return [k for k in FAILURES if result[k]]


def run_checker(opts: Options, tokens: dict[str, str],
                progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Write, harm, heal, read back and judge; return the result (``failed()`` tells)."""
    from watchlog.launcher.nemesis import Harm

    for url in (opts.producer_url, opts.consumer_url):
        try:
            httpx.get(url + "/health", timeout=5).raise_for_status()
        except httpx.HTTPError as e:
            raise VerifyError(f"{url} does not answer ({e}); is `watchlog up` running?") from e
    rng = random.Random(opts.random_seed)  # the workload replays; the ids are new each run
    run = "vfy-" + uuid.uuid4().hex[:8]
    day = opts.day or (datetime.now(UTC).date() - timedelta(days=2))
    units = workload(run, opts.count, day, rng)
    ledger = Ledger()
    reader = Reader(opts.consumer_url, tokens["reader"], deadline=opts.heal_timeout)
    ext = Extraction(reader, run)
    harm = Harm(opts, tokens, ext_name=run, progress=progress)
    try:
        ext.create()
        seconds = opts.duration if opts.duration is not None else EXPECTED_S[opts.nemesis] + 1
        progress(f"run {run}: {opts.count} logs in {len(units)} requests over ~{seconds:.0f} s, "
                 f"nemesis {opts.nemesis}")
        with harm.running(delay=min(1.0, seconds / 5)):
            w_start, w_end = write_all(opts, units, ledger, tokens["ingest"], seconds)
        progress("writes done; healing")
        harm.heal()
        progress("reading back")
        result = read_back(opts, run, day, units, ledger, reader, ext, harm)
    finally:
        harm.close()
        reader.close()
    result.update(summary_of(run, day, units, ledger, harm, (w_start, w_end)))
    result["verdict"] = "failed" if failed(result) else "ok"
    result["failed"] = failed(result)
    return result


def read_back(opts: Options, run: str, day: date, units: list[Unit], ledger: Ledger,
              reader: Reader, ext: Extraction, harm: Harm) -> dict[str, Any]:
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    to = start + DAY_MS - 1
    everything, report = day_snapshot(reader, start, to, day)
    mine = [d for d in everything if str(d.get("event_id", "")).startswith(run + "-")]
    users = sorted({d["user_id"] for u in units for d in u.docs})
    pages = {u: reader.pages(u, start, to) for u in users}
    summaries = {u: int(reader.call("GET", f"/v1/users/{u}/summary",
                                    params={"from": day.isoformat(), "to": day.isoformat()}
                                    )["total"]["count"]) for u in users}
    if opts.nemesis == "kill-extractor":
        extracted = harm.extracted({d["event_id"] for d in mine} | ledger.acked)
    else:
        ext.drain({d["event_id"] for d in mine} | ledger.acked)
        extracted = ext.delivered
    ext.delete()
    views = {"export": mine, "pages": [d for p in pages.values() for d in p],
             "extractor": [d for d in extracted if str(d["event_id"]).startswith(run + "-")]}
    with ledger.lock:
        result = judge(ledger.sent, ledger.acked, ledger.rejected, views)
        result["ids"]["misreported"] = sorted(ledger.misreported)
    result["misreported"] = len(result["ids"]["misreported"])
    off = miscounted(summaries, pages, int(report["count"]), len(everything))
    result["miscounted"], result["miscounted_details"] = len(off), off
    result["read_back"] = {
        "export": len(mine), "export_day_total": len(everything), "pages": len(views["pages"]),
        "users": len(users), "report_count": int(report["count"]),
        "extractor": len(views["extractor"]),
        "extractor_redelivered_after_ack": ext.redelivered_after_ack,
        "extractor_ack_shortfall": ext.ack_shortfall}
    return result


def day_snapshot(reader: Reader, start: int, to: int, day: date) -> tuple[list[Doc], Doc]:
    """The day's export and report, read while no other client wrote to that day.

    The report is read before and after the export; if it moved (someone else writes logs
    of that day), read again, so that comparing the two is fair.
    """
    params = {"date": day.isoformat()}
    for _ in range(5):
        before = reader.call("GET", "/v1/reports/daily", params=params)
        everything = reader.export(start, to)
        after = reader.call("GET", "/v1/reports/daily", params=params)
        if before["count"] == after["count"]:
            break
        time.sleep(1)
    return everything, after


def summary_of(run: str, day: date, units: list[Unit], ledger: Ledger, harm: Harm,
               writes: tuple[float, float]) -> dict[str, Any]:
    """The counts of the run besides the verdict: workload, answers, errors, stall."""
    acks = [t for t, _ in ledger.ack_times]
    h0, h1 = harm.window or (writes[1], writes[1])
    singles = sum(1 for u in units if u.single)
    same_ms = sum(1 for u in units for a, b in zip(u.docs, u.docs[1:], strict=False)
                  if a["_ts"] == b["_ts"])
    return {
        "run": run, "day": day.isoformat(), "nemesis": harm.opts.nemesis,
        "attempted": len(ledger.sent), "requests": len(units), "single_posts": singles,
        "batches": len(units) - singles, "same_millisecond_pairs": same_ms,
        "acknowledged": len(ledger.acked), "created": ledger.created,
        "duplicate_answers": ledger.duplicate, "rejected": len(ledger.rejected),
        "errors": dict(sorted(ledger.errors.items())),
        "error_samples": ledger.samples,
        "longest_stall_s": round(longest_stall(acks, *writes), 2),
        "write_seconds": round(writes[1] - writes[0], 2),
        "during_nemesis": {
            "seconds": round(h1 - h0, 2),
            "requests": sum(1 for t in ledger.send_times if h0 <= t <= h1),
            "acknowledged": sum(n for t, n in ledger.ack_times if h0 <= t <= h1),
            "errors": sum(1 for t in ledger.error_times if h0 <= t <= h1)},
        "nemesis_log": harm.notes,
    }


# -- output ------------------------------------------------------------------------------


def render(r: dict[str, Any]) -> Iterator[str]:
    """The result as lines a person reads (the JSON holds the same and the ids)."""
    errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
    rb = r["read_back"]
    dn = r["during_nemesis"]
    yield (f"run {r['run']}: nemesis {r['nemesis']}, logs dated {r['day']}, "
           f"{r['write_seconds']} s of writes")
    rows = [
        ("attempted", r["attempted"], f"{r['single_posts']} single POSTs, {r['batches']} "
         f"batches; {r['same_millisecond_pairs']} pairs share a millisecond"),
        ("acknowledged", r["acknowledged"],
         f"created {r['created']}, duplicate {r['duplicate_answers']}"),
        ("rejected", r["rejected"], "4xx: the log was refused, must not be stored"),
        ("indeterminate", r["indeterminate"], f"stored once {r['indeterminate_stored_once']}"
         f", absent {r['indeterminate_absent']}, in some views only "
         f"{r['indeterminate_partial']}"),
        ("lost", r["lost"], "acknowledged, missing from a view: "
         + ", ".join(f"{k} {v}" for k, v in r["missing_by_view"].items())),
        ("duplicated", r["duplicated"], "in a view twice, or extracted again after an "
         f"ack ({rb['extractor_redelivered_after_ack']})"),
        ("phantom", r["phantom"], "read back but never sent, rejected, or altered"),
        ("misreported", r["misreported"], "a first send answered `duplicate`"),
        ("miscounted", r["miscounted"], "; ".join(r["miscounted_details"][:3])
         or "summaries and the daily report agree with the logs"),
    ]
    for name, n, note in rows:
        yield f"  {name:<14}{n:>7}   {note}"
    yield f"  {'errors':<14}{sum(r['errors'].values()):>7}   {errs}"
    yield f"  {'longest stall':<14}{r['longest_stall_s']:>6.1f}s   without any acknowledgement"
    yield (f"  {'nemesis':<14}{dn['seconds']:>6.1f}s   {dn['requests']} requests sent, "
           f"{dn['acknowledged']} logs acknowledged and {dn['errors']} errors meanwhile")
    for note in r["nemesis_log"]:
        yield f"      {note}"
    yield (f"  read back: export {rb['export']}, pages {rb['pages']} ({rb['users']} users), "
           f"extractor {rb['extractor']}, daily report {rb['report_count']} = export "
           f"{rb['export_day_total']} for the day")
    verdict = "OK" if not r["failed"] else "FAILED: " + ", ".join(r["failed"])
    yield f"verdict: {verdict}"


def extractor_process(consumer_url: str, name: str, out: Path, env: dict[str, str],
                      follow: bool) -> subprocess.Popen[bytes]:
    """Start ``watchlog extract`` (what the stack runs) for the run's extractor."""
    argv = [sys.executable, "-m", "watchlog", "extract", "--name", name, "-o", str(out),
            "--url", consumer_url, "--visibility-timeout", "2", "--interval", "0.2"]
    log = open(out.parent / f"{out.name}.log", "ab")  # noqa: SIM115 - the child holds it
    try:
        return subprocess.Popen([*argv, *(["--follow"] if follow else [])], env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        log.close()


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
