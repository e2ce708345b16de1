"""The demo tenants.yaml, served by the dispatcher: what `make run` shows a new user.

These go through the whole stack (file → dispatcher → notes app) with real forms and CSRF
tokens, in one cookie jar, as a browser would; the demo's instance folders go to tmp_path.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from werkzeug.test import Client, TestResponse

from dispatcher import Dispatcher, check_tenants
from tests.conftest import ROOT

DEMO = (ROOT / "tenants.yaml").read_text()
SITES = {  # tenant -> (Host header, URL prefix)
    "acme": ("localhost", "/acme"),
    "globex": ("127.0.0.1:5000", "/globex"),
    "umbrella": ("umbrella.localhost:5000", ""),
}


@pytest.fixture
def browser(make_dispatcher: Callable[[str], Dispatcher]) -> Client:
    """One cookie jar across every demo tenant."""
    return Client(make_dispatcher(DEMO))


def visit(browser: Client, tenant: str, path: str, **form: str) -> TestResponse:
    """GET a page, or POST a form to it with the CSRF token its GET page carries."""
    host, prefix = SITES[tenant]
    url = prefix + path
    if not form:
        return browser.get(url, headers={"Host": host})
    page = browser.get(url, headers={"Host": host}).get_data(as_text=True)
    return browser.post(url, data={"csrf_token": csrf_token(page), **form}, headers={"Host": host})


def csrf_token(page: str) -> str:
    """The CSRF token of the first form on a page (WTForms or a hand-written hidden input)."""
    match = re.search(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"', page)
    assert match, "no CSRF token on the page"
    return match.group(1)


def register(browser: Client, tenant: str, user: str) -> None:
    response = visit(
        browser, tenant, "/auth/register", username=user, password="s3cret-pw", confirm="s3cret-pw"
    )
    assert response.status_code == 302, response.get_data(as_text=True)


def logged_in_user(browser: Client, tenant: str) -> str | None:
    page = visit(browser, tenant, "/").get_data(as_text=True)
    match = re.search(r'<span class="user">([^<]+)</span>', page)
    return match.group(1) if match else None


def test_demo_file_checks_clean() -> None:
    tenant_set, problems = check_tenants(ROOT / "tenants.yaml")
    assert problems == []
    assert tenant_set is not None
    assert [t.mount for t in tenant_set] == [
        "/acme",
        "/globex",
        ("umbrella.localhost",),
        "/initech",
    ]
    assert {t.app for t in tenant_set} == {"tenants.notes", "tenants.tasks"}


def test_each_tenant_shows_its_own_site(browser: Client) -> None:
    for tenant, name in [("acme", "Acme"), ("globex", "Globex"), ("umbrella", "Umbrella")]:
        page = visit(browser, tenant, "/auth/login")
        assert page.status_code == 200
        assert f"{name} Notes" in page.get_data(as_text=True)


def test_logged_in_to_every_tenant_at_once(browser: Client) -> None:
    register(browser, "acme", "alice")
    register(browser, "globex", "bob")
    register(browser, "umbrella", "carol")
    assert logged_in_user(browser, "acme") == "alice"
    assert logged_in_user(browser, "globex") == "bob"
    assert logged_in_user(browser, "umbrella") == "carol"
    # Logging out of one tenant leaves the others logged in.
    host, prefix = SITES["globex"]
    page = browser.get(prefix + "/", headers={"Host": host}).get_data(as_text=True)
    logout = browser.post(
        prefix + "/auth/logout", data={"csrf_token": csrf_token(page)}, headers={"Host": host}
    )
    assert logout.status_code == 302
    assert logged_in_user(browser, "globex") is None
    assert logged_in_user(browser, "acme") == "alice"
    assert logged_in_user(browser, "umbrella") == "carol"


def test_session_cookie_of_one_tenant_is_rejected_by_the_others(
    make_dispatcher: Callable[[str], Dispatcher],
) -> None:
    dispatcher = make_dispatcher(DEMO)
    browser = Client(dispatcher)
    register(browser, "acme", "alice")
    cookie = browser.get_cookie("session_acme", domain="localhost", path="/acme")
    assert cookie is not None
    for tenant in ("globex", "umbrella"):
        host, _ = SITES[tenant]
        thief = Client(dispatcher)
        domain = host.partition(":")[0]
        for name in ("session_acme", f"session_{tenant}"):
            thief.set_cookie(name, cookie.value, domain=domain, path="/")
        assert logged_in_user(thief, tenant) is None


def test_data_of_one_tenant_is_invisible_in_another(browser: Client, tmp_path: Path) -> None:
    register(browser, "acme", "alice")
    register(browser, "globex", "alice")  # same user name, different tenant
    response = visit(browser, "acme", "/create", title="Acme secret plan", body="x")
    assert response.status_code == 302
    assert "Acme secret plan" in visit(browser, "acme", "/").get_data(as_text=True)
    assert "Acme secret plan" not in visit(browser, "globex", "/").get_data(as_text=True)
    with sqlite3.connect(tmp_path / "instance" / "globex" / "app.db") as db:
        assert db.execute("SELECT count(*) FROM notes").fetchone() == (0,)
    with sqlite3.connect(tmp_path / "instance" / "acme" / "app.db") as db:
        assert db.execute("SELECT count(*) FROM notes").fetchone() == (1,)


def test_redirects_and_assets_stay_under_the_prefix(browser: Client) -> None:
    response = visit(browser, "acme", "/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/acme/auth/login"
    page = visit(browser, "acme", "/auth/login").get_data(as_text=True)
    assert 'href="/acme/static/style.css"' in page
    stylesheet = visit(browser, "acme", "/static/style.css")
    stylesheet.close()
    assert stylesheet.status_code == 200
    assert 'href="/static/style.css"' in visit(browser, "umbrella", "/auth/login").get_data(
        as_text=True
    )


def test_tasks_api_is_served_beside_the_notes_app(browser: Client) -> None:
    response = browser.get("/initech/api/v1/", headers={"Host": "localhost"})
    assert response.json == {"tenant": "Initech Tasks", "version": 1}
    response = browser.get("/initech/api/v1/tasks", headers={"Host": "localhost"})
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"
