"""The migrations are the schema: a new tenant is built at head, and head matches the models."""

from __future__ import annotations

from typing import TYPE_CHECKING

import flask_migrate
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from dispatcher.migrate import current_revision, head_revision
from tenants.tasks.extensions import db

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskCliRunner

pytestmark = pytest.mark.tenant_app("tenants.tasks")

TABLES = {"alembic_version", "api_tokens", "tasks", "users"}


def test_new_tenant_is_built_at_head(app: Flask) -> None:
    folder = app.extensions["migrate"].directory
    assert current_revision(app) == head_revision(folder) is not None
    with app.app_context():
        assert set(sa.inspect(db.engine).get_table_names()) == TABLES


def test_migrated_schema_equals_the_models(app: Flask) -> None:
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, db.metadata) == []


def test_db_check_finds_nothing_to_generate(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["db", "check"])
    assert result.exit_code == 0, result.output


def test_downgrade_to_base_and_up_again(app: Flask) -> None:
    with app.app_context():
        flask_migrate.downgrade(revision="base")
        assert set(sa.inspect(db.engine).get_table_names()) == {"alembic_version"}
        flask_migrate.upgrade()
        assert set(sa.inspect(db.engine).get_table_names()) == TABLES
