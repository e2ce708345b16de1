"""Fixtures for the tasks app's tests: tenant ``acme`` on ``tmp_path``, built as the dispatcher
builds it (instance folder, secret key, SQLite hardening, schema from the migrations).

They do not use the ``dispatcher.testing`` plugin, and their names (``tasks_app``, ``api``,
``cli``) differ from the plugin's (``tenant``, ``app``, ``client``, ``runner``) so the plugin
never parametrizes these tests over the demo tenants. Users and tokens are made through the
app's own CLI commands, as an operator makes them::

    def test_x(api, accounts):
        api.get("/api/v1/tasks", headers=accounts.headers("alice"))
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from dispatcher.build import app_engines, build_app
from dispatcher.tenant import TenantConfig


@pytest.fixture
def tasks_tenant(tmp_path: Path) -> TenantConfig:
    """Tenant ``acme`` running the tasks app, its instance folder and database in tmp_path."""
    return TenantConfig(
        name="acme",
        app="tenants.tasks",
        instance_path=str(tmp_path / "acme"),
        database_uri=f"sqlite:///{tmp_path}/acme/app.db",
        path="/acme",
        config={"TESTING": True},
    )


@pytest.fixture
def tasks_app(tasks_tenant: TenantConfig) -> Iterator[Flask]:
    """The tenant's app, built by the dispatcher (so its schema comes from the migrations)."""
    app = build_app(tasks_tenant)
    yield app
    for engine in app_engines(app):
        engine.dispose()


@pytest.fixture
def api(tasks_app: Flask) -> FlaskClient:
    """A test client of the app, mounted at the tenant's path as the dispatcher mounts it.

    Requests name paths inside the app (``/api/v1/tasks``); the app's absolute URLs carry the
    mount (:func:`base_url`), because the dispatcher sets ``APPLICATION_ROOT`` to it.
    """
    return tasks_app.test_client()


@pytest.fixture
def base_url(tasks_tenant: TenantConfig) -> str:
    """What the app's absolute URLs start with: ``http://localhost/acme``.

    To follow one with :func:`api`, request ``url.removeprefix(base_url)``.
    """
    return f"http://localhost{tasks_tenant.path}"


@pytest.fixture
def cli(tasks_app: Flask) -> FlaskCliRunner:
    """A runner for the app's CLI commands (stdout and stderr kept apart)."""
    return tasks_app.test_cli_runner()


class Accounts:
    """Users and their API tokens, made with the ``create-user`` and ``create-token`` commands."""

    def __init__(self, cli: FlaskCliRunner) -> None:
        self._cli = cli
        self.tokens: dict[str, str] = {}

    def token(self, username: str) -> str:
        """``username``'s token, creating the user and a token on first use."""
        if username not in self.tokens:
            created = self._cli.invoke(args=["create-user", username])
            assert created.exit_code == 0, created.output
            issued = self._cli.invoke(args=["create-token", username])
            assert issued.exit_code == 0, issued.output
            self.tokens[username] = issued.stdout.strip()
        return self.tokens[username]

    def headers(self, username: str) -> dict[str, str]:
        """The ``Authorization`` header of ``username``'s requests."""
        return {"Authorization": f"Bearer {self.token(username)}"}


@pytest.fixture
def accounts(cli: FlaskCliRunner) -> Accounts:
    """Make users and tokens on demand: ``accounts.headers("alice")``."""
    return Accounts(cli)


@pytest.fixture
def alice(accounts: Accounts) -> dict[str, str]:
    """The ``Authorization`` header of user alice (created on first use)."""
    return accounts.headers("alice")
