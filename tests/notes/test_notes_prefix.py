"""Mounted under a path prefix (as the dispatcher mounts it), every URL carries the prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

if TYPE_CHECKING:
    from flask import Flask


@pytest.fixture
def mounted(app: Flask) -> Client:
    """A client of ``app`` mounted at /acme, with a plain 404 everywhere else."""
    return Client(DispatcherMiddleware(NotFound(), {"/acme": app}))


def test_login_required_redirects_under_the_prefix(mounted: Client) -> None:
    response = mounted.get("/acme/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/acme/")
    assert response.headers["Location"] == "/acme/auth/login"


def test_links_and_static_under_the_prefix(mounted: Client) -> None:
    page = mounted.get("/acme/auth/login").get_data(as_text=True)
    assert 'href="/acme/static/style.css"' in page
    assert 'action="/acme/auth/login"' in page
    assert 'href="/acme/auth/register"' in page

    with mounted.get("/acme/static/style.css") as css:
        assert css.status_code == 200
        assert css.mimetype == "text/css"


def test_register_and_logout_under_the_prefix(mounted: Client) -> None:
    data = {"username": "alice", "password": "correct horse", "confirm": "correct horse"}
    response = mounted.post("/acme/auth/register", data=data)
    assert response.status_code == 302
    assert response.headers["Location"] == "/acme/"

    page = mounted.get("/acme/").get_data(as_text=True)
    assert 'action="/acme/auth/logout"' in page
    assert 'href="/acme/create"' in page

    response = mounted.post("/acme/auth/logout")
    assert response.headers["Location"] == "/acme/auth/login"


def test_outside_the_prefix_is_not_the_app(mounted: Client) -> None:
    assert mounted.get("/auth/login").status_code == 404
