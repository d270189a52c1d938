"""Where alerts land when nobody configured a pager: a webhook receiver and ``watchlog alerts``.

Alertmanager's default receiver (monitoring/alertmanager/alertmanager.yml) posts every
notification, firing and resolved, to ``watchlog alert-sink``. The sink keeps the most recent
``KEEP`` alerts in a JSON-lines file (``<state>/alerts/alerts.jsonl`` natively) and serves them
at ``GET /alerts``; ``watchlog alerts`` prints them. Nothing external is needed to see that an
alert fired and that it resolved; email, Slack or PagerDuty receivers are commented examples in
the Alertmanager config.

The sink listens on loopback natively. When started with ``--token-file``, a POST must carry
``Authorization: Bearer <token>`` (Alertmanager's ``http_config.authorization``), so another
local account cannot plant alerts; reading is open to whoever reaches the port.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import click

from watchlog.core.settings import DEFAULT_STATE_DIR

KEEP = 500  # alerts kept in the file (oldest dropped first)
HEARTBEAT = "Watchdog"  # the always-firing alert: its arrival time is kept, not the alert
LATE = 180  # seconds without a heartbeat before `watchlog alerts` warns (it comes every 60 s)
MAX_BODY = 1 << 20  # an Alertmanager notification is a few KB; refuse anything over 1 MiB
DEFAULT_URL = "http://127.0.0.1:9095"


class AlertLog:
    """The last ``keep`` alerts received, one JSON object a line, newest last."""

    def __init__(self, path: Path, keep: int = KEEP) -> None:
        self.path, self.keep = path, keep
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def heartbeat_path(self) -> Path:
        return self.path.with_suffix(".heartbeat")

    def heartbeat(self) -> float | None:
        """Return when the Watchdog last arrived (epoch seconds), or None."""
        try:
            return float(self.heartbeat_path.read_text())
        except (OSError, ValueError):
            return None

    def add(self, notification: dict[str, Any]) -> int:
        """Store each alert of an Alertmanager webhook notification; return how many."""
        now = time.time()
        received = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        rows = [flatten(a, notification.get("receiver", ""), received)
                for a in notification.get("alerts", []) if isinstance(a, dict)]
        if any(r["alertname"] == HEARTBEAT for r in rows):
            self.heartbeat_path.write_text(f"{now}\n")
            rows = [r for r in rows if r["alertname"] != HEARTBEAT]
        if not rows:
            return 0
        with self.lock:
            kept = [*self.read_all(), *rows][-self.keep:]
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(0o600)
            tmp.replace(self.path)
        return len(rows)

    def read_all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]


def flatten(alert: dict[str, Any], receiver: str, received: str) -> dict[str, Any]:
    """One alert of a notification, as the CLI shows it."""
    labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
    annotations = alert.get("annotations") or {}
    return {"received": received, "receiver": receiver,
            "status": str(alert.get("status", "")), "alertname": labels.get("alertname", ""),
            "severity": labels.get("severity", ""), "labels": labels,
            "summary": str(annotations.get("summary", "")),
            "runbook_url": str(annotations.get("runbook_url", "")),
            "starts_at": str(alert.get("startsAt", "")), "ends_at": str(alert.get("endsAt", ""))}


def answer_get(log: AlertLog, path: str) -> tuple[int, dict[str, Any]]:
    url = urlparse(path)
    if url.path == "/-/ready":
        return 200, {"status": "ready"}
    if url.path != "/alerts":
        return 404, {"error": "not_found", "message": "GET /alerts"}
    raw = parse_qs(url.query).get("limit", ["50"])[0]
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= KEEP:
        return 400, {"error": "invalid", "message": f"limit: 1-{KEEP}"}
    return 200, {"items": log.read_all()[-int(raw):], "heartbeat": log.heartbeat()}


def answer_post(log: AlertLog, token: str | None, path: str, headers: Message,
                rfile: BufferedIOBase) -> tuple[int, dict[str, Any]]:
    if urlparse(path).path != "/webhook":
        return 404, {"error": "not_found", "message": "POST /webhook"}
    if token is not None:
        given = headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return 401, {"error": "unauthorized", "message": "bearer token"}
    length = headers.get("Content-Length", "")
    if not length.isascii() or not length.isdigit() or int(length) > MAX_BODY:
        return 413, {"error": "too_large", "message": f"at most {MAX_BODY} bytes"}
    try:
        body = json.loads(rfile.read(int(length)))
    except ValueError:
        return 400, {"error": "malformed", "message": "malformed JSON"}
    if not isinstance(body, dict):
        return 400, {"error": "invalid", "message": "an Alertmanager notification"}
    return 200, {"stored": log.add(body)}


def make_handler(log: AlertLog, token: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, answer: tuple[int, dict[str, Any]]) -> None:
            status, body = answer
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._send(answer_get(log, self.path))

        def do_POST(self) -> None:  # noqa: N802
            self._send(answer_post(log, token, self.path, self.headers, self.rfile))

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return  # one line per notification would drown the launcher's log

    return Handler


def serve(address: str, path: Path, token: str | None) -> ThreadingHTTPServer:
    """Return the sink's server bound to ``host:port`` (the caller runs serve_forever)."""
    host, _, port = address.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), make_handler(AlertLog(path), token))
    server.timeout = 10
    return server


@click.command("alert-sink")
@click.option("--listen", default="127.0.0.1:9095", show_default=True, help="host:port")
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="JSON-lines file of the recent alerts.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Require this bearer token on POST /webhook.")
def alert_sink(listen: str, path: Path, token_file: Path | None) -> None:
    """Receive Alertmanager's webhook notifications and keep the recent ones."""
    token = token_file.read_text().strip() if token_file else None
    server = serve(listen, path, token)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _recorded_url(state_dir: Path) -> str | None:
    """The sink's address as ``watchlog up`` recorded it, if it did."""
    try:
        record = json.loads((state_dir / "pids.json").read_text())
    except (OSError, ValueError):
        return None
    for entry in record.get("services", []):
        if entry.get("component") == "alert-sink":
            return f"http://{entry['address']}"
    return None


@click.command()
@click.option("--url", default=None,
              help=f"The alert sink (default: the one `watchlog up` runs, else {DEFAULT_URL}).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_STATE_DIR, show_default=True, envvar="WATCHLOG_STATE_DIR")
@click.option("--limit", type=click.IntRange(1, KEEP), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the alerts as JSON.")
@click.option("--check", is_flag=True,
              help="Exit 1 when the heartbeat is late or has never arrived (for scripts).")
def alerts(url: str | None, state_dir: Path, limit: int, as_json: bool, check: bool) -> None:
    """Show the most recent alert notifications (firing and resolved), newest last.

    With ``--check``, the exit status says whether the alerting path works: 0 when the
    Watchdog heartbeat arrived within the last few minutes, 1 when it is late or never came.
    """
    base = url or _recorded_url(state_dir) or DEFAULT_URL
    try:
        with urllib.request.urlopen(f"{base.rstrip('/')}/alerts?limit={limit}",
                                    timeout=10) as response:
            body = json.load(response)
            items, beat = body["items"], body.get("heartbeat")
    except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
        raise click.ClickException(f"cannot read alerts from {base}: {e}") from None
    healthy = beat is not None and time.time() - beat <= LATE
    if as_json:
        click.echo(json.dumps({"items": items, "heartbeat": beat}, indent=2))
    else:
        _print(items, beat)
    if check and not healthy:
        raise SystemExit(1)


def _print(items: list[dict[str, Any]], beat: float | None) -> None:
    if beat is None:
        click.echo(click.style("heartbeat: none received yet (Watchdog: Prometheus → "
                               "Alertmanager → this sink)", fg="yellow"))
    else:
        age = time.time() - beat
        late = age > LATE
        click.echo(click.style(f"heartbeat: last {age:.0f} s ago" +
                               (" — LATE: Prometheus or Alertmanager is down" if late else ""),
                               fg="red" if late else "green"))
    if not items:
        click.echo("no alerts received")
    for a in items:
        labels = a["labels"]
        where = labels.get("instance") or labels.get("extractor") or labels.get("service") \
            or labels.get("job", "")
        colour = "green" if a["status"] == "resolved" else \
            "red" if a["severity"] == "critical" else "yellow"
        click.echo(f"{a['received']}  " + click.style(f"{a['status']:8}", fg=colour) +
                   f" {a['severity']:8} {a['alertname']} {where}: {a['summary']}")
