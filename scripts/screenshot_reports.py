#!/usr/bin/env python3
"""Take the README's picture of the reports page (docs/reports.png) from a live consumer.

It signs in through the page's own form with the reader key (found as the CLI finds it:
WATCHLOG_READER_KEY, else the credentials file of `watchlog up`), opens the fleet day and
saves a screenshot, in Debian's chromium driven by Playwright (as tests/api/test_reports_page.py).

    .venv/bin/watchlog up --detach
    .venv/bin/watchlog simulate --count 3000 --users 40 --json
    .venv/bin/python scripts/screenshot_reports.py            # -> docs/reports.png
    .venv/bin/watchlog down
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from watchlog.clients.http import require_token

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=os.environ.get("WATCHLOG_CONSUMER_URL",
                                                    "http://127.0.0.1:5002"),
                    help="the consumer (default: $WATCHLOG_CONSUMER_URL or :5002)")
    ap.add_argument("--page", default="/reports/", help="the page to take (default: fleet day)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "reports.png")
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--full-page", action="store_true", help="the whole page, not the top")
    ap.add_argument("--chromium", default=shutil.which("chromium"),
                    help="the browser (default: chromium on PATH; apt-get install chromium)")
    args = ap.parse_args()
    if not args.chromium:
        sys.exit("no chromium on PATH: apt-get install chromium")
    key = require_token("reader")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium)
        try:
            page = browser.new_page(viewport={"width": args.width, "height": 1100})
            page.goto(args.url.rstrip("/") + "/reports/sign-in")
            page.fill("#key", key or "")
            page.click("button:has-text('Sign in')")
            page.wait_for_url("**/reports/**")
            response = page.goto(args.url.rstrip("/") + args.page)
            if response is None or response.status != 200:
                sys.exit(f"{args.page}: {response and response.status}")
            page.wait_for_load_state("networkidle")  # the charts
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=args.full_page)
        finally:
            browser.close()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
