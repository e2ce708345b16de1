"""``create_app``: settings layering, what the factory must leave to the dispatcher, isolation."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from tenants.notes import create_app
from tenants.notes.extensions import db

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient
    from werkzeug.test import Client

    from dispatcher import TenantConfig

pytestmark = pytest.mark.tenant_app("tenants.notes")

ACCOUNT = {"username": "alice", "password": "correct horse", "confirm": "correct horse"}


def test_defaults(tenant: TenantConfig) -> None:
    app = create_app(dataclasses.replace(tenant, config={}))
    assert app.config["SITE_NAME"] == tenant.name.title()
    assert app.config["NOTES_PER_PAGE"] == 20
    assert app.config["SQLALCHEMY_DATABASE_URI"] == tenant.database_uri
    assert app.instance_path == tenant.instance_path
    hyphenated = dataclasses.replace(tenant, name="acme-corp", config={})
    assert create_app(hyphenated).config["SITE_NAME"] == "Acme Corp"


def test_tenants_yaml_config_overrides_defaults(app: Flask, tenant: TenantConfig) -> None:
    assert tenant.config["SITE_NAME"]  # every demo tenant names its site
    for key, value in tenant.config.items():
        assert app.config[key] == value
    assert app.config["NOTES_PER_PAGE"] == (10 if tenant.name == "globex" else 20)


@pytest.mark.parametrize(
    "app_config", [{"SITE_NAME": "ACME Inc.", "NOTES_PER_PAGE": 5}], ids=["overridden"]
)
def test_app_config_overrides_tenants_yaml(app: Flask, app_config: dict[str, Any]) -> None:
    assert app.config["SITE_NAME"] == "ACME Inc."
    assert app.config["NOTES_PER_PAGE"] == 5


def test_instance_config_py_wins_over_tenant_config(tenant: TenantConfig) -> None:
    with open(os.path.join(tenant.instance_path, "config.py"), "w") as f:
        f.write('SITE_NAME = "From instance"\n')
    app = create_app(dataclasses.replace(tenant, config={"SITE_NAME": "From YAML"}))
    assert app.config["SITE_NAME"] == "From instance"


def test_factory_leaves_secret_key_and_schema_to_the_dispatcher(tenant: TenantConfig) -> None:
    empty = f"sqlite:///{tenant.instance_path}/empty.db"
    app = create_app(dataclasses.replace(tenant, database_uri=empty))
    assert app.config["SECRET_KEY"] is None
    with app.app_context():
        assert sa.inspect(db.engine).get_table_names() == []
        db.engine.dispose()


def test_two_tenants_share_the_package_but_not_data(
    tenant: TenantConfig, client: FlaskClient, dispatcher_client: Client
) -> None:
    assert client.post("/auth/register", data=ACCOUNT).status_code == 302

    # The dispatcher serves this tenant from the same database as `client`: alice exists...
    own = mount(tenant)
    response = dispatcher_client.post(f"{own[0]}/auth/login", data=ACCOUNT, headers=own[1])
    assert response.status_code == 302
    # ...and in no other tenant of the notes app, where another alice can register.
    for other in dispatcher_client.application.tenant_set.enabled:  # type: ignore[attr-defined]
        if other.name == tenant.name or other.module != tenant.module:
            continue  # initech runs another app
        prefix, headers = mount(other)
        response = dispatcher_client.post(f"{prefix}/auth/login", data=ACCOUNT, headers=headers)
        assert response.status_code == 200
        assert "Incorrect username or password." in response.get_data(as_text=True)
        response = dispatcher_client.post(f"{prefix}/auth/register", data=ACCOUNT, headers=headers)
        assert response.status_code == 302


def mount(tenant: TenantConfig) -> tuple[str, dict[str, str]]:
    """The URL prefix and Host header that reach ``tenant`` through the demo dispatcher."""
    if tenant.path is not None:
        return tenant.path, {"Host": "localhost"}
    return "", {"Host": tenant.hosts[0]}
