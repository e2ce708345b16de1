"""Helpers for the notes app's tests, which run once per demo tenant (``dispatcher.testing``).

The plugin gives each test ``tenant``, ``app`` and ``client`` on a fresh copy of that tenant's
database, built the way the dispatcher builds it. CSRF is off here (:func:`app_config`) so tests
can post plain forms; ``test_notes_csrf.py`` turns it back on to prove it is enforced. The app
is served under its tenant's mount, so links and redirects carry :func:`prefix`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from dispatcher import TenantConfig


@pytest.fixture
def app_config() -> dict[str, Any]:
    """CSRF off, so tests post plain forms (test_notes_csrf.py turns it back on)."""
    return {"WTF_CSRF_ENABLED": False}


@pytest.fixture
def prefix(tenant: TenantConfig) -> str:
    """What the app's URLs start with: the tenant's path (``/acme``), or ``""`` on a host."""
    return tenant.path or ""


@pytest.fixture
def site_name(tenant: TenantConfig) -> str:
    """The tenant's site name: from tenants.yaml, else the factory's default."""
    return str(tenant.config.get("SITE_NAME", tenant.name.replace("-", " ").title()))


class AuthActions:
    """Register, log in and log out through the real forms."""

    def __init__(self, client: FlaskClient) -> None:
        self._client = client

    def register(
        self, username: str = "alice", password: str = "correct horse", confirm: str | None = None
    ) -> TestResponse:
        """Register (which also logs in) with the register form."""
        data = {
            "username": username,
            "password": password,
            "confirm": password if confirm is None else confirm,
        }
        return self._client.post("/auth/register", data=data)

    def login(self, username: str = "alice", password: str = "correct horse") -> TestResponse:
        """Log in with the login form."""
        return self._client.post("/auth/login", data={"username": username, "password": password})

    def logout(self) -> TestResponse:
        """Log out with the logout button's POST."""
        return self._client.post("/auth/logout")


@pytest.fixture
def auth(client: FlaskClient) -> AuthActions:
    """Account actions on the plugin's ``client``."""
    return AuthActions(client)
