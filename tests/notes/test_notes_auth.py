"""Accounts: registering, logging in and out, and keeping anonymous visitors out."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from tenants.notes.extensions import db
from tenants.notes.models import User

pytestmark = pytest.mark.tenant_app("tenants.notes")

if TYPE_CHECKING:
    from conftest import AuthActions
    from flask import Flask
    from flask.testing import FlaskClient


def field_errors(html: str, field: str) -> list[str]:
    """The errors rendered right after ``field``'s input, inside that field's block."""
    match = re.search(
        rf'<input[^>]*name="{field}"[^>]*>\s*<ul class="errors" id="{field}-errors">(.*?)</ul>',
        html,
        re.S,
    )
    return re.findall(r"<li>(.*?)</li>", match.group(1)) if match else []


def test_register_logs_in_and_goes_to_notes(
    app: Flask, client: FlaskClient, auth: AuthActions, prefix: str
) -> None:
    assert client.get("/auth/register").status_code == 200

    response = auth.register("alice", "correct horse")
    assert response.status_code == 302
    assert response.headers["Location"] == f"{prefix}/"

    page = client.get("/").get_data(as_text=True)
    assert "Your notes" in page
    assert '<span class="user">alice</span>' in page
    with app.app_context():
        user = db.session.scalars(select(User)).one()
    assert user.username == "alice"
    assert "correct horse" not in user.password_hash


def test_register_duplicate_username(client: FlaskClient, auth: AuthActions) -> None:
    auth.register("alice")
    auth.logout()

    response = auth.register("alice", "another password")
    assert response.status_code == 200
    errors = field_errors(response.get_data(as_text=True), "username")
    assert errors == ["That username is already taken."]


@pytest.mark.parametrize(
    ("username", "password", "confirm", "field", "message"),
    [
        ("", "correct horse", None, "username", "This field is required."),
        (
            "al",
            "correct horse",
            None,
            "username",
            "Field must be between 3 and 80 characters long.",
        ),
        ("alice", "short", None, "password", "Field must be between 8 and 200 characters long."),
        ("alice", "correct horse", "correct horsf", "confirm", "Passwords must match."),
    ],
)
def test_register_validation_errors_next_to_their_field(
    app: Flask,
    auth: AuthActions,
    username: str,
    password: str,
    confirm: str | None,
    field: str,
    message: str,
) -> None:
    response = auth.register(username, password, confirm)
    assert response.status_code == 200
    assert field_errors(response.get_data(as_text=True), field) == [message]
    with app.app_context():
        assert db.session.scalars(select(User)).all() == []


def test_login(client: FlaskClient, auth: AuthActions, prefix: str) -> None:
    auth.register()
    auth.logout()
    assert client.get("/auth/login").status_code == 200

    response = auth.login()
    assert response.status_code == 302
    assert response.headers["Location"] == f"{prefix}/"
    assert client.get("/").status_code == 200


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "wrong password"), ("nobody", "correct horse")]
)
def test_login_refused(
    client: FlaskClient, auth: AuthActions, username: str, password: str
) -> None:
    auth.register()
    auth.logout()

    response = auth.login(username, password)
    assert response.status_code == 200
    assert "Incorrect username or password." in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_logout_is_a_post(client: FlaskClient, auth: AuthActions, prefix: str) -> None:
    auth.register()
    page = client.get("/").get_data(as_text=True)
    assert f'<form class="inline" method="post" action="{prefix}/auth/logout">' in page

    assert client.get("/auth/logout").status_code == 405
    assert client.get("/").status_code == 200  # a GET did not log us out

    response = auth.logout()
    assert response.status_code == 302
    assert response.headers["Location"] == f"{prefix}/auth/login"
    assert "You have been logged out." in client.get("/auth/login").get_data(as_text=True)
    assert client.get("/").headers["Location"] == f"{prefix}/auth/login"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/create"),
        ("POST", "/create"),
        ("GET", "/1/edit"),
        ("POST", "/1/delete"),
    ],
)
def test_login_required(client: FlaskClient, prefix: str, method: str, path: str) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 302
    assert response.headers["Location"] == f"{prefix}/auth/login"
