"""The task list: pages with absolute next/prev links (also under a path prefix), and filters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient

    from dispatcher.tenant import TenantConfig


pytestmark = pytest.mark.tenant_app("tenants.tasks")


def add(client: FlaskClient, headers: dict[str, str], *titles: str, **fields: Any) -> None:
    for title in titles:
        response = client.post("/api/v1/tasks", headers=headers, json={"title": title, **fields})
        assert response.status_code == 201


def listing(client: FlaskClient, headers: dict[str, str], query: str = "") -> dict[str, Any]:
    response = client.get(f"/api/v1/tasks{query}", headers=headers)
    assert response.status_code == 200, response.json
    assert response.json is not None
    return response.json


def titles(page: dict[str, Any]) -> list[str]:
    return [task["title"] for task in page["items"]]


def test_empty(client: FlaskClient, alice: dict[str, str]) -> None:
    assert listing(client, alice) == {
        "items": [],
        "page": 1,
        "per_page": 20,
        "total": 0,
        "links": {"next": None, "prev": None},
    }


def test_pages_newest_first_with_absolute_links(
    client: FlaskClient, alice: dict[str, str], base_url: str
) -> None:
    add(client, alice, *(f"t{n}" for n in range(1, 6)))
    first = listing(client, alice, "?per_page=2")
    assert titles(first) == ["t5", "t4"]
    assert (first["page"], first["per_page"], first["total"]) == (1, 2, 5)
    assert first["links"] == {
        "next": f"{base_url}/api/v1/tasks?page=2&per_page=2",
        "prev": None,
    }

    second = listing(client, alice, "?page=2&per_page=2")
    assert titles(second) == ["t3", "t2"]
    assert second["links"] == {
        "next": f"{base_url}/api/v1/tasks?page=3&per_page=2",
        "prev": f"{base_url}/api/v1/tasks?page=1&per_page=2",
    }

    # Following the links visits every task exactly once.
    seen, url = [], first["links"]["next"]
    seen += titles(first)
    while url:
        page = client.get(url.removeprefix(base_url), headers=alice).json
        assert page is not None
        seen += titles(page)
        url = page["links"]["next"]
    assert seen == ["t5", "t4", "t3", "t2", "t1"]


def test_default_page_size_is_configurable(
    client: FlaskClient, alice: dict[str, str], app: Flask, base_url: str
) -> None:
    app.config["TASKS_PER_PAGE"] = 3
    add(client, alice, *"abcd")
    page = listing(client, alice)
    assert (len(page["items"]), page["per_page"]) == (3, 3)
    assert page["links"]["next"] == f"{base_url}/api/v1/tasks?page=2&per_page=3"


def test_per_page_is_capped(
    client: FlaskClient, alice: dict[str, str], app: Flask, base_url: str
) -> None:
    app.config["TASKS_MAX_PER_PAGE"] = 2
    add(client, alice, *"abc")
    page = listing(client, alice, "?per_page=1000")
    assert (titles(page), page["per_page"]) == (["c", "b"], 2)
    assert page["links"]["next"] == f"{base_url}/api/v1/tasks?page=2&per_page=2"


def test_page_past_the_end_is_empty(
    client: FlaskClient, alice: dict[str, str], base_url: str
) -> None:
    add(client, alice, "only")
    page = listing(client, alice, "?page=3")
    assert (page["items"], page["total"]) == ([], 1)
    assert page["links"] == {
        "next": None,
        "prev": f"{base_url}/api/v1/tasks?page=2&per_page=20",
    }


@pytest.mark.parametrize("where", ["own", "nested"])
def test_links_carry_the_path_prefix(
    tenant: TenantConfig, app: Flask, alice: dict[str, str], where: str
) -> None:
    # Links follow the prefix of the request (SCRIPT_NAME), wherever the app is mounted: at
    # the tenant's own path (a host tenant's at /<name>), or nested under another prefix.
    own = tenant.path or f"/{tenant.name}"
    mount = own if where == "own" else f"/elsewhere{own}"
    mounted = Client(DispatcherMiddleware(NotFound(), {mount: app}))
    for title in ("a", "b"):
        created = mounted.post(f"{mount}/api/v1/tasks", headers=alice, json={"title": title})
        assert created.headers["Location"].startswith(f"http://localhost{mount}/api/v1/tasks/")

    page = mounted.get(f"{mount}/api/v1/tasks?per_page=1", headers=alice).json
    assert page is not None
    assert page["items"][0]["url"].startswith(f"http://localhost{mount}/api/v1/tasks/")
    next_url = page["links"]["next"]
    assert next_url == f"http://localhost{mount}/api/v1/tasks?page=2&per_page=1"
    following = mounted.get(next_url, headers=alice).json  # absolute URLs are followable as is
    assert following is not None
    assert titles(following) == ["a"]
    assert following["links"] == {
        "next": None,
        "prev": f"http://localhost{mount}/api/v1/tasks?page=1&per_page=1",
    }


@pytest.fixture
def mixed(client: FlaskClient, alice: dict[str, str]) -> None:
    """Tasks with and without due dates, done and not, with odd characters in titles."""
    add(client, alice, "Pay rent", due="2026-03-01")
    add(client, alice, "Pay TAXES", due="2026-04-30", done=True)
    add(client, alice, "100% done_ish", due="2026-03-02")
    add(client, alice, "Call mum")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?done=true", ["Pay TAXES"]),
        ("?done=false", ["Call mum", "100% done_ish", "Pay rent"]),
        ("?due_before=2026-03-02", ["Pay rent"]),
        ("?due_before=2026-05-01", ["100% done_ish", "Pay TAXES", "Pay rent"]),
        ("?q=pay", ["Pay TAXES", "Pay rent"]),
        ("?q=taxes", ["Pay TAXES"]),
        ("?q=%25", ["100% done_ish"]),  # % and _ are plain characters, not wildcards
        ("?q=y_r", []),  # "_" would match the space in "Pay rent"
        ("?q=done_", ["100% done_ish"]),
        ("?q=pay&done=false&due_before=2026-12-31", ["Pay rent"]),
        ("?q=", ["Call mum", "100% done_ish", "Pay TAXES", "Pay rent"]),
    ],
)
def test_filters(
    client: FlaskClient, alice: dict[str, str], mixed: None, query: str, expected: list[str]
) -> None:
    page = listing(client, alice, query)
    assert titles(page) == expected
    assert page["total"] == len(expected)


def test_links_keep_the_filters(
    client: FlaskClient, alice: dict[str, str], mixed: None, base_url: str
) -> None:
    page = listing(client, alice, "?q=pay&done=false&per_page=1&due_before=2026-12-31")
    assert page["links"]["next"] is None
    page = listing(client, alice, "?q=a&per_page=1&done=false")
    assert page["total"] == 2
    assert page["links"]["next"] == (f"{base_url}/api/v1/tasks?page=2&per_page=1&done=false&q=a")
