"""Notes tenants served by real uWSGI, seen through headless Chromium driven by Playwright.

Playwright's Python package drives the machine's Chromium (Debian's ``chromium``,
``/usr/bin/chromium``); it never downloads a browser of its own. uWSGI runs the project's
uwsgi.ini with an HTTP socket on a free loopback port, so the browser talks to it directly::

    with notes_server(folder, TENANTS) as port, sync_playwright() as pw:
        with chromium_profile(pw, folder / "profile") as profile:
            page = profile.new_page()
            page.goto(f"http://localhost:{port}/acme/auth/login")

Path tenants answer on ``localhost``, subdomain tenants on ``<name>.localhost``: Chromium
resolves every ``*.localhost`` name to loopback itself, so no DNS or hosts file is involved.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .servers import ROOT, UWSGI, Uwsgi, free_port

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Playwright

#: Where screenshots kept after a run go (git-ignored).
ARTIFACTS = ROOT / "test-artifacts" / "browser"

#: Chromium as root, in a sandbox with no route out: no GPU, no QUIC, and none of the
#: background connections (updates, sync, field trials) that a closed network refuses.
#: Playwright adds --headless, --no-sandbox and a fresh --user-data-dir itself.
CHROMIUM_FLAGS = (
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> str | None:
    """The machine's Chromium: ``$CHROMIUM``, else ``chromium`` on PATH, else ``None``."""
    candidate = os.environ.get("CHROMIUM") or shutil.which("chromium")
    return candidate if candidate and os.access(candidate, os.X_OK) else None


def missing_tools() -> list[str]:
    """What the browser tests need and this machine lacks, each with how to get it."""
    missing = []
    if find_chromium() is None:
        missing.append("Chromium (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install -r requirements.txt)")
    if not os.access(UWSGI, os.X_OK):
        missing.append(f"uWSGI at {UWSGI} (make test installs it)")
    return missing


@contextlib.contextmanager
def notes_server(folder: Path, tenants: str, *, processes: int = 2) -> Iterator[int]:
    """Serve ``tenants`` (tenants.yaml text) with uWSGI on an HTTP port; yield the port.

    Instance folders (and so the SQLite databases) go under ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tenants_file = folder / "tenants.yaml"
    tenants_file.write_text(tenants)
    port = free_port()
    server = Uwsgi.start(
        folder / "uwsgi",
        tenants_file,
        processes=processes,
        options=("--http-socket", f"127.0.0.1:{port}"),
    )
    try:
        yield port
    finally:
        server.stop()


@contextlib.contextmanager
def chromium_profile(
    playwright: Playwright,
    profile: Path,
    *,
    width: int = 1280,
    height: int = 800,
    timeout_ms: float = 10_000,
) -> Iterator[BrowserContext]:
    """One browser profile (cookies and all) in a fresh user data folder, closed at the end."""
    executable = find_chromium()
    assert executable, "no Chromium: check missing_tools() first"
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=executable,
        headless=True,
        args=list(CHROMIUM_FLAGS),
        viewport={"width": width, "height": height},
        # Fixed, so that screenshots look the same on every machine.
        locale="en-US",
        timezone_id="UTC",
    )
    context.set_default_timeout(timeout_ms)
    try:
        yield context
    finally:
        context.close()
