"""``create_app``: settings layering, and what the factory leaves to the dispatcher."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

import tenants.tasks
from tenants.tasks import create_app
from tenants.tasks.extensions import db

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient

    from dispatcher.tenant import TenantConfig


pytestmark = pytest.mark.tenant_app("tenants.tasks")


def test_defaults(tenant: TenantConfig) -> None:
    app = create_app(dataclasses.replace(tenant, config={}))
    assert app.config["SITE_NAME"] == tenant.name
    assert app.config["TASKS_PER_PAGE"] == 20
    assert app.config["TASKS_MAX_PER_PAGE"] == 100
    assert app.config["SQLALCHEMY_DATABASE_URI"] == tenant.database_uri
    assert app.instance_path == tenant.instance_path


def test_tenant_config_then_instance_config_py(tenant: TenantConfig) -> None:
    configured = dataclasses.replace(tenant, config={"SITE_NAME": "From YAML", "TASKS_PER_PAGE": 5})
    assert create_app(configured).config["TASKS_PER_PAGE"] == 5
    folder = Path(tenant.instance_path)  # the plugin made it, empty of any config.py
    (folder / "config.py").write_text('SITE_NAME = "From instance"\n')
    app = create_app(configured)
    assert app.config["SITE_NAME"] == "From instance"
    assert app.config["TASKS_PER_PAGE"] == 5


def test_factory_leaves_secret_key_and_schema_to_the_dispatcher(
    tenant: TenantConfig, tmp_path: Path
) -> None:
    app = create_app(dataclasses.replace(tenant, database_uri=f"sqlite:///{tmp_path}/e.db"))
    assert app.config["SECRET_KEY"] is None
    with app.app_context():
        assert sa.inspect(db.engine).get_table_names() == []
        db.engine.dispose()


def test_migrations_folder_follows_the_convention(app: Flask) -> None:
    # The dispatcher finds the folder here and creates new databases from it.
    directory = app.extensions["migrate"].directory
    assert directory == str(Path(tenants.tasks.__file__).parent / "migrations")
    assert Path(directory, "env.py").is_file()


def test_index_names_the_tenant_without_a_token(
    client: FlaskClient, app: Flask, tenant: TenantConfig
) -> None:
    site_name = tenant.config.get("SITE_NAME", tenant.name)  # tenants.yaml's, else the name
    assert client.get("/api/v1/").json == {"tenant": site_name, "version": 1}
    app.config["SITE_NAME"] = "Renamed Tasks"
    assert client.get("/api/v1/").json == {"tenant": "Renamed Tasks", "version": 1}
