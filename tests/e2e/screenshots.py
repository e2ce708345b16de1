"""Screenshots of the notes app in headless Chromium, to look at and for the README.

    .venv/bin/python -m tests.e2e.screenshots

serves one notes tenant ("Acme Notes") with uWSGI, registers a user, writes a few notes, and
saves, at desktop (1280x800) and phone (390x844) sizes:

- ``docs/screenshots/notes-desktop.png`` and ``notes-phone.png``: the notes list (README);
- ``test-artifacts/looks/<size>-<page>.png``: every page worth checking by eye, validation
  errors included (the login form, the registration form, the note form, the list).

Needs what the browser test needs (Chromium and Playwright); see tests/e2e/browser.py.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from .browser import chromium_profile, missing_tools, notes_server
from .servers import ROOT

DOCS = ROOT / "docs" / "screenshots"
LOOKS = ROOT / "test-artifacts" / "looks"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}

TENANTS = """\
version: 1
server_names: [127.0.0.1]
instance_root: instance
defaults: {app: tenants.notes}
tenants:
  acme: {path: /acme, config: {SITE_NAME: Acme Notes}}
"""
USER, PASSWORD = "wile", "super genius 1"
NOTES = (
    (
        "Supplier call",
        "Ask about delivery times for the rocket skates.\nFollow up by Friday if no answer.",
    ),
    ("Welcome pack for new hires", "Laptop, badge, parking permit and the safety handbook."),
    (
        "Quarterly planning",
        "Draft the Q3 roadmap with the product team. Book the big meeting room for Thursday "
        "morning and send the agenda a day before.",
    ),
)


def main() -> int:
    missing = missing_tools()
    if missing:
        print("screenshots need " + " and ".join(missing), file=sys.stderr)
        return 1
    from playwright.sync_api import expect, sync_playwright

    DOCS.mkdir(parents=True, exist_ok=True)
    LOOKS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with notes_server(folder / "server", TENANTS, processes=1) as port, sync_playwright() as pw:
            base = f"http://127.0.0.1:{port}/acme"
            with chromium_profile(pw, folder / "profile") as context:
                page = context.new_page()

                def shot(size: str, name: str) -> None:
                    page.screenshot(path=LOOKS / f"{size}-{name}.png", full_page=True)

                for size, (width, height) in SIZES.items():
                    page.set_viewport_size({"width": width, "height": height})
                    page.goto(f"{base}/auth/login")
                    page.get_by_label("Username").fill(USER)
                    page.locator("main").get_by_role("button", name="Log in").click()
                    expect(page.locator(".has-errors")).to_have_count(1)
                    shot(size, "login-error")
                    page.goto(f"{base}/auth/register")
                    page.get_by_label("Username").fill("wi")
                    page.get_by_label("Password", exact=True).fill("short")
                    page.get_by_role("button", name="Register").click()
                    expect(page.locator(".has-errors")).to_have_count(3)
                    shot(size, "register-errors")

                page.set_viewport_size({"width": 1280, "height": 800})
                page.get_by_label("Username").fill(USER)
                page.get_by_label("Password", exact=True).fill(PASSWORD)
                page.get_by_label("Repeat password").fill(PASSWORD)
                page.get_by_role("button", name="Register").click()
                expect(page.locator(".site-header .user")).to_have_text(USER)
                shot("desktop", "list-empty")
                for title, body in NOTES:
                    page.get_by_role("link", name="New note").click()
                    page.get_by_label("Title").fill(title)
                    page.get_by_label("Body").fill(body)
                    page.get_by_role("button", name="Save").click()
                    expect(page.locator("article.note h2").first).to_have_text(title)

                for size, (width, height) in SIZES.items():
                    page.set_viewport_size({"width": width, "height": height})
                    page.goto(f"{base}/create")
                    shot(size, "form")
                    page.get_by_label("Body").fill("A note without a title.")
                    page.get_by_role("button", name="Save").click()
                    expect(page.locator(".has-errors")).to_have_count(1)
                    shot(size, "form-error")
                    page.goto(f"{base}/")
                    page.get_by_role("link", name="Edit").first.click()
                    shot(size, "edit")
                    page.goto(f"{base}/")
                    shot(size, "list")
                    page.screenshot(path=DOCS / f"notes-{size}.png")
                page.goto(f"{base}/no-such-page")
                shot("phone", "404")
    print(f"wrote {DOCS.relative_to(ROOT)}/notes-*.png and {LOOKS.relative_to(ROOT)}/*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
