"""``create_app``: settings layering, what the factory must leave to the dispatcher, isolation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from tenants.notes.extensions import db

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import MakeApp


def test_defaults(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app("acme-corp")
    assert app.config["SITE_NAME"] == "Acme Corp"
    assert app.config["NOTES_PER_PAGE"] == 20
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/acme-corp/app.db"
    assert app.instance_path == str(tmp_path / "acme-corp")


def test_tenant_config_overrides_defaults(make_app: MakeApp) -> None:
    app = make_app(SITE_NAME="ACME Inc.", NOTES_PER_PAGE=5)
    assert app.config["SITE_NAME"] == "ACME Inc."
    assert app.config["NOTES_PER_PAGE"] == 5


def test_instance_config_py_wins_over_tenant_config(make_app: MakeApp, tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir(mode=0o700)
    (tmp_path / "acme" / "config.py").write_text('SITE_NAME = "From instance"\n')
    app = make_app(SITE_NAME="From YAML")
    assert app.config["SITE_NAME"] == "From instance"


def test_factory_leaves_secret_key_and_schema_to_the_dispatcher(make_app: MakeApp) -> None:
    app = make_app(create_schema=False, SECRET_KEY=None)
    assert app.config["SECRET_KEY"] is None
    with app.app_context():
        assert sa.inspect(db.engine).get_table_names() == []


def test_two_tenants_share_the_package_but_not_data(make_app: MakeApp) -> None:
    acme = make_app("acme", WTF_CSRF_ENABLED=False)
    globex = make_app("globex", WTF_CSRF_ENABLED=False)
    data = {"username": "alice", "password": "correct horse", "confirm": "correct horse"}

    assert acme.test_client().post("/auth/register", data=data).status_code == 302

    response = globex.test_client().post("/auth/login", data=data)
    assert response.status_code == 200
    assert "Incorrect username or password." in response.get_data(as_text=True)
    # And globex can have its own alice.
    assert globex.test_client().post("/auth/register", data=data).status_code == 302
