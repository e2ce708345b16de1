"""CSRF: with protection on (the default), every POST without a valid token is refused."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

pytestmark = pytest.mark.tenant_app("tenants.notes")


@pytest.fixture
def app_config() -> dict[str, Any]:
    """CSRF protection on, as in production (conftest.py turns it off for other tests)."""
    return {}


def token(response: TestResponse) -> str:
    """The CSRF token in a rendered page (the test fails if the page has none)."""
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', response.get_data(as_text=True))
    assert match is not None, "page has no csrf_token field"
    return match.group(1)


def register(client: FlaskClient) -> None:
    data = {"username": "alice", "password": "correct horse", "confirm": "correct horse"}
    data["csrf_token"] = token(client.get("/auth/register"))
    assert client.post("/auth/register", data=data).status_code == 302


def test_forms_work_with_the_token_they_render(client: FlaskClient) -> None:
    register(client)
    response = client.post(
        "/create", data={"title": "hi", "csrf_token": token(client.get("/create"))}
    )
    assert response.status_code == 302
    response = client.post("/auth/logout", data={"csrf_token": token(client.get("/"))})
    assert response.status_code == 302
    assert client.get("/").status_code == 302  # logged out


@pytest.mark.parametrize("csrf_token", [None, "forged"])
def test_login_without_valid_token_is_refused(client: FlaskClient, csrf_token: str | None) -> None:
    register(client)
    client.post("/auth/logout", data={"csrf_token": token(client.get("/"))})
    data = {"username": "alice", "password": "correct horse"}
    if csrf_token:
        data["csrf_token"] = csrf_token
    assert client.post("/auth/login", data=data).status_code == 400
    assert client.get("/").status_code == 302  # still logged out


@pytest.mark.parametrize(
    "path", ["/auth/register", "/auth/logout", "/create", "/1/edit", "/1/delete"]
)
def test_post_without_token_is_refused(client: FlaskClient, path: str) -> None:
    register(client)
    client.post("/create", data={"title": "keep me", "csrf_token": token(client.get("/create"))})

    response = client.post(path, data={"username": "bob", "title": "changed"})
    assert response.status_code == 400
    page = client.get("/").get_data(as_text=True)
    assert "keep me" in page  # not deleted or edited
    assert '<span class="user">alice</span>' in page  # not logged out
