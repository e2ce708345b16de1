"""A screenshot of ``python -m dispatcher top`` for the README, from a real run.

    .venv/bin/python -m tests.e2e.top_screenshot

serves six tenants (the demo's apps) with uwsgi.ini (2 processes x 4 threads), sends them
uneven traffic from a few client threads (some 404s, a failing tenant, one in maintenance),
reads the node's metrics twice as ``top`` does, and saves the table ``top`` prints as
``docs/screenshots/top.svg`` (rich's SVG export) and ``docs/screenshots/top.png`` (that SVG in
headless Chromium).
"""

from __future__ import annotations

import io
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console

from dispatcher.cli.top import table
from dispatcher.metrics_read import fetch, metrics_url, parse

from .browser import chromium_profile, missing_tools
from .client import fetch as get
from .servers import ROOT, Uwsgi, free_port

DOCS = ROOT / "docs" / "screenshots"
TENANTS = """\
version: 1
server_names: [localhost]
instance_root: instance
defaults: {app: tenants.notes}
tenants:
  acme: {path: /acme, config: {SITE_NAME: Acme Notes}}
  globex: {path: /globex, config: {SITE_NAME: Globex Notes}}
  initech: {path: /initech, app: tenants.tasks}
  umbrella: {path: /umbrella, config: {SITE_NAME: Umbrella Notes}}
  hooli: {path: /hooli, lazy: true}
  wayne: {path: /wayne, maintenance: true}
"""
#: (path, clients): acme busiest; initech's API with unknown routes; wayne in maintenance.
TRAFFIC = (
    ("/acme/auth/login", 3),
    ("/globex/auth/login", 2),
    ("/initech/api/v1/nothing-here", 1),
    ("/umbrella/auth/login", 1),
    ("/wayne/", 1),
)


def main() -> int:
    missing = missing_tools()
    if missing:
        print("the screenshot needs " + " and ".join(missing), file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "tenants.yaml").write_text(TENANTS)
        port = free_port()
        server = Uwsgi.start(
            folder / "uwsgi",
            folder / "tenants.yaml",
            options=["--http-socket", f"127.0.0.1:{port}"],
        )
        stop = threading.Event()

        def client(path: str) -> None:
            while not stop.is_set():
                get(port, path, host="localhost")

        threads = [
            threading.Thread(target=client, args=(path,))
            for path, count in TRAFFIC
            for _ in range(count)
        ]
        try:
            for thread in threads:
                thread.start()
            url = metrics_url(f"http://127.0.0.1:{port}")
            time.sleep(3)  # let the traffic settle before the interval that is shown
            before = parse(fetch(url))
            time.sleep(2)  # top's default interval
            after = parse(fetch(url))
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            server.stop()
        console = Console(
            file=io.StringIO(), record=True, width=78, force_terminal=True, color_system="truecolor"
        )
        console.print(table(url, before, after))
        DOCS.mkdir(parents=True, exist_ok=True)
        svg = DOCS / "top.svg"
        svg.write_text(console.export_svg(title="python -m dispatcher top"))
        with sync_playwright() as pw, chromium_profile(pw, folder / "profile") as context:
            page = context.new_page()
            page.goto(svg.as_uri())
            page.locator("svg").screenshot(path=DOCS / "top.png")
    print(f"wrote {svg} and {DOCS / 'top.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
