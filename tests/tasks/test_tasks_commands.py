"""The operator's commands: users, and API tokens that are shown once and stored hashed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from dispatcher.build import app_engines, build_app
from dispatcher.loader import load_tenants
from tenants.tasks.extensions import db
from tenants.tasks.models import ApiToken, User

if TYPE_CHECKING:
    from conftest import Accounts
    from flask import Flask
    from flask.testing import FlaskClient, FlaskCliRunner

pytestmark = pytest.mark.tenant_app("tenants.tasks")

ROOT = Path(__file__).resolve().parents[2]


def tokens(app: Flask) -> list[ApiToken]:
    with app.app_context():
        return list(db.session.scalars(select(ApiToken).order_by(ApiToken.id)))


def test_create_user(runner: FlaskCliRunner, app: Flask) -> None:
    result = runner.invoke(args=["create-user", "alice"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Created user 'alice'.\n"
    with app.app_context():
        assert db.session.scalars(select(User.username)).all() == ["alice"]


def test_create_user_twice(runner: FlaskCliRunner) -> None:
    runner.invoke(args=["create-user", "alice"])
    result = runner.invoke(args=["create-user", "alice"])
    assert result.exit_code == 1
    assert "Error: User 'alice' already exists." in result.stderr


@pytest.mark.parametrize("username", ["", "two words", "x" * 81, "semi;colon"])
def test_create_user_refuses_odd_names(runner: FlaskCliRunner, username: str) -> None:
    result = runner.invoke(args=["create-user", username])
    assert result.exit_code == 2
    assert "Error: Invalid value for USERNAME: use 1 to 80 letters, digits or" in result.stderr


def test_token_is_printed_once_and_stored_hashed(
    runner: FlaskCliRunner, app: Flask, client: FlaskClient
) -> None:
    runner.invoke(args=["create-user", "alice"])
    result = runner.invoke(args=["create-token", "alice", "--name", "laptop"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == f"{token}\n"  # only the token on stdout: TOKEN=$(...) works
    assert len(token) == 43  # token_urlsafe(32): 32 random bytes in base64url
    assert "Copy it now" in result.stderr
    assert token not in result.stderr

    (record,) = tokens(app)
    assert (record.name, record.last_used) == ("laptop", None)
    assert record.token_hash == hashlib.sha256(token.encode()).hexdigest()
    with app.app_context():
        assert token not in str(db.session.execute(select(ApiToken.__table__)).all())

    response = client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert tokens(app)[0].last_used is not None

    listed = runner.invoke(args=["list-tokens", "alice"])
    assert listed.stdout.startswith(f"{record.id}\tlaptop\tcreated ")
    assert token not in listed.stdout


def test_tokens_differ_and_each_works(
    accounts: Accounts, runner: FlaskCliRunner, client: FlaskClient
) -> None:
    first = accounts.token("alice")
    second = runner.invoke(args=["create-token", "alice", "--name", "phone"]).stdout.strip()
    assert first != second
    for token in (first, second):
        response = client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200


def test_token_names_are_unique_per_user(accounts: Accounts, runner: FlaskCliRunner) -> None:
    accounts.token("alice")  # a token named "default"
    accounts.token("bob")  # so is bob's: names are per user
    result = runner.invoke(args=["create-token", "alice"])
    assert result.exit_code == 1
    assert "User 'alice' already has a token named 'default'" in result.stderr
    assert result.stdout == ""


def test_create_token_for_unknown_user(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["create-token", "nobody"])
    assert result.exit_code == 1
    assert "No user 'nobody'; create it first with: create-user nobody" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("how", ["name", "id"])
def test_revoked_token_is_refused(
    how: str, accounts: Accounts, runner: FlaskCliRunner, client: FlaskClient, app: Flask
) -> None:
    headers = accounts.headers("alice")
    assert client.get("/api/v1/tasks", headers=headers).status_code == 200
    (record,) = tokens(app)
    chosen = ["--name", "default"] if how == "name" else ["--id", str(record.id)]
    result = runner.invoke(args=["revoke-token", "alice", *chosen])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Revoked token 'default' (id {record.id}) of 'alice'.\n"
    assert tokens(app) == []

    response = client.get("/api/v1/tasks", headers=headers)
    assert response.status_code == 401
    assert response.json is not None
    assert response.json["detail"] == "The API token is not valid: it is unknown or was revoked."


def test_revoke_only_the_users_own_token(
    accounts: Accounts, runner: FlaskCliRunner, app: Flask
) -> None:
    accounts.token("alice")
    accounts.token("bob")
    bobs = tokens(app)[1]
    result = runner.invoke(args=["revoke-token", "alice", "--id", str(bobs.id)])
    assert result.exit_code == 1
    assert f"User 'alice' has no token with id {bobs.id}; list-tokens alice" in result.stderr
    assert len(tokens(app)) == 2


@pytest.mark.parametrize("options", [[], ["--name", "default", "--id", "1"]], ids=["none", "both"])
def test_revoke_needs_name_or_id(
    accounts: Accounts, runner: FlaskCliRunner, options: list[str]
) -> None:
    accounts.token("alice")
    result = runner.invoke(args=["revoke-token", "alice", *options])
    assert result.exit_code == 2
    assert "Give the token's --name or its --id (one of them)." in result.stderr


def test_through_python_m_dispatcher_exec(tmp_path: Path) -> None:
    """The operator's way, as in the README: real processes, a real tenants file."""
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(
        textwrap.dedent(
            """\
            version: 1
            server_names: [localhost]
            instance_root: instance
            tenants:
              acme: {path: /acme, app: tenants.tasks}
            """
        )
    )

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "dispatcher",
                "-f",
                str(tenants_file),
                "exec",
                "acme",
                "--",
                *command,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    run("create-user", "alice")
    token = run("create-token", "alice", "--name", "laptop").stdout.strip()

    app = build_app(load_tenants(tenants_file)["acme"])
    try:
        response = app.test_client().get(
            "/api/v1/tasks", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
        assert response.json is not None
        assert response.json["total"] == 0
    finally:
        for engine in app_engines(app):
            engine.dispose()
