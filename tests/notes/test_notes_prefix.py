"""Mounted under a path prefix (as the dispatcher mounts it), every URL carries the prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

if TYPE_CHECKING:
    from flask import Flask

    from dispatcher import TenantConfig

pytestmark = pytest.mark.tenant_app("tenants.notes")


@pytest.fixture
def mount(tenant: TenantConfig) -> str:
    """The tenant's path; a host tenant is mounted under ``/<name>`` to prove it copes too."""
    return tenant.path or f"/{tenant.name}"


@pytest.fixture
def mounted(app: Flask, mount: str) -> Client:
    """A client of ``app`` mounted at ``mount``, with a plain 404 everywhere else."""
    return Client(DispatcherMiddleware(NotFound(), {mount: app}))


def test_login_required_redirects_under_the_prefix(mounted: Client, mount: str) -> None:
    response = mounted.get(f"{mount}/")
    assert response.status_code == 302
    assert response.headers["Location"] == f"{mount}/auth/login"


def test_links_and_static_under_the_prefix(mounted: Client, mount: str) -> None:
    page = mounted.get(f"{mount}/auth/login").get_data(as_text=True)
    assert f'href="{mount}/static/style.css"' in page
    assert f'action="{mount}/auth/login"' in page
    assert f'href="{mount}/auth/register"' in page

    with mounted.get(f"{mount}/static/style.css") as css:
        assert css.status_code == 200
        assert css.mimetype == "text/css"


def test_register_and_logout_under_the_prefix(mounted: Client, mount: str) -> None:
    data = {"username": "alice", "password": "correct horse", "confirm": "correct horse"}
    response = mounted.post(f"{mount}/auth/register", data=data)
    assert response.status_code == 302
    assert response.headers["Location"] == f"{mount}/"

    page = mounted.get(f"{mount}/").get_data(as_text=True)
    assert f'action="{mount}/auth/logout"' in page
    assert f'href="{mount}/create"' in page

    response = mounted.post(f"{mount}/auth/logout")
    assert response.headers["Location"] == f"{mount}/auth/login"


def test_outside_the_prefix_is_not_the_app(mounted: Client) -> None:
    assert mounted.get("/auth/login").status_code == 404
