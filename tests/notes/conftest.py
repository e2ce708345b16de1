"""Fixtures for the notes app's tests: one tenant's app on a temporary instance folder.

The app is built the way the dispatcher builds it: ``create_app(TenantConfig(...))``, then
``db.create_all()``. CSRF is off by default so tests can post plain forms;
``test_notes_csrf.py`` turns it back on to prove it is enforced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from dispatcher.tenant import TenantConfig
from tenants.notes import create_app
from tenants.notes.extensions import db

MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    """A factory: ``make_app(name="acme", **config)`` builds that tenant's app with its schema."""
    apps: list[Flask] = []

    def make(name: str = "acme", *, create_schema: bool = True, **config: Any) -> Flask:
        instance = tmp_path / name
        instance.mkdir(mode=0o700, exist_ok=True)
        tenant = TenantConfig(
            name=name,
            app="tenants.notes",
            instance_path=str(instance),
            database_uri=f"sqlite:///{instance}/app.db",
            path=f"/{name}",
            config={"SECRET_KEY": "test", "TESTING": True, **config},
        )
        app = create_app(tenant)
        if create_schema:
            with app.app_context():
                db.create_all()
        apps.append(app)
        return app

    yield make
    # Close pooled SQLite connections now, not at some later garbage collection.
    for app in apps:
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    """Tenant ``acme``'s notes app, CSRF off."""
    return make_app(WTF_CSRF_ENABLED=False)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for :func:`app`."""
    return app.test_client()


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
    """Account actions on :func:`client`."""
    return AuthActions(client)
