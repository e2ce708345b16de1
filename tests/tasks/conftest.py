"""Helpers for the tasks app's tests, which run once per tasks tenant (``dispatcher.testing``).

Every test module is marked ``tenant_app("tenants.tasks")``, so the plugin runs its tests that
take ``tenant``, ``app``, ``client`` or ``runner`` once per tenant of tenants.yaml running the
tasks app (the demo file has one: initech), each on a fresh copy of that tenant's database,
its schema built from the app's migrations as the dispatcher builds it. Users and tokens are
made through the app's own CLI commands, as an operator makes them::

    def test_x(client, accounts):
        client.get("/api/v1/tasks", headers=accounts.headers("alice"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flask.testing import FlaskCliRunner

    from dispatcher.tenant import TenantConfig


@pytest.fixture
def base_url(tenant: TenantConfig) -> str:
    """What the app's absolute URLs start with: ``http://localhost/initech``.

    Requests name paths inside the app (``/api/v1/tasks``); the app's absolute URLs carry the
    tenant's mount, which the plugin's ``client`` sends as ``SCRIPT_NAME``. To follow one with
    ``client``, request ``url.removeprefix(base_url)``.
    """
    return f"http://localhost{tenant.path or ''}"


class Accounts:
    """Users and their API tokens, made with the ``create-user`` and ``create-token`` commands."""

    def __init__(self, runner: FlaskCliRunner) -> None:
        self._runner = runner
        self.tokens: dict[str, str] = {}

    def token(self, username: str) -> str:
        """``username``'s token, creating the user and a token on first use."""
        if username not in self.tokens:
            created = self._runner.invoke(args=["create-user", username])
            assert created.exit_code == 0, created.output
            issued = self._runner.invoke(args=["create-token", username])
            assert issued.exit_code == 0, issued.output
            self.tokens[username] = issued.stdout.strip()
        return self.tokens[username]

    def headers(self, username: str) -> dict[str, str]:
        """The ``Authorization`` header of ``username``'s requests."""
        return {"Authorization": f"Bearer {self.token(username)}"}


@pytest.fixture
def accounts(runner: FlaskCliRunner) -> Accounts:
    """Make users and tokens on demand: ``accounts.headers("alice")``."""
    return Accounts(runner)


@pytest.fixture
def alice(accounts: Accounts) -> dict[str, str]:
    """The ``Authorization`` header of user alice (created on first use)."""
    return accounts.headers("alice")
