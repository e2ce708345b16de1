"""Notes: each user creates, lists (paginated), edits and deletes their own notes only."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from tenants.notes.extensions import db
from tenants.notes.models import Note

if TYPE_CHECKING:
    from conftest import AuthActions
    from flask import Flask
    from flask.testing import FlaskClient

pytestmark = pytest.mark.tenant_app("tenants.notes")


def titles(html: str) -> list[str]:
    """The note titles on a list page, in order."""
    return re.findall(r"<h2>(.*?)</h2>", html)


def all_notes(app: Flask) -> list[Note]:
    with app.app_context():
        return list(db.session.scalars(select(Note).order_by(Note.id)))


@pytest.fixture
def alice(auth: AuthActions) -> AuthActions:
    """``auth``, with alice registered and logged in."""
    auth.register("alice")
    return auth


@pytest.mark.usefixtures("alice")
def test_empty_list(client: FlaskClient, prefix: str) -> None:
    page = client.get("/").get_data(as_text=True)
    assert "No notes yet." in page
    assert f'href="{prefix}/create"' in page


@pytest.mark.usefixtures("alice")
def test_create(app: Flask, client: FlaskClient, prefix: str) -> None:
    assert client.get("/create").status_code == 200

    response = client.post("/create", data={"title": "Groceries", "body": "milk\neggs"})
    assert response.status_code == 302
    assert response.headers["Location"] == f"{prefix}/"

    page = client.get("/").get_data(as_text=True)
    assert titles(page) == ["Groceries"]
    assert "milk\neggs" in page
    assert "Note saved." in page
    [note] = all_notes(app)
    assert (note.title, note.body, note.updated) == ("Groceries", "milk\neggs", None)


@pytest.mark.usefixtures("alice")
def test_create_requires_a_title(app: Flask, client: FlaskClient) -> None:
    response = client.post("/create", data={"title": "  ", "body": "orphan body"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    title_error = r'name="title"[^>]*>\s*<ul class="errors"[^>]*>\s*<li>This field is required'
    assert re.search(title_error, html)
    assert "orphan body" in html  # what was typed is kept
    assert all_notes(app) == []


@pytest.mark.usefixtures("alice")
def test_list_is_newest_first(client: FlaskClient) -> None:
    for title in ("first", "second", "third"):
        client.post("/create", data={"title": title})
    assert titles(client.get("/").get_data(as_text=True)) == ["third", "second", "first"]


@pytest.mark.usefixtures("alice")
def test_edit(app: Flask, client: FlaskClient, prefix: str) -> None:
    client.post("/create", data={"title": "Draft", "body": "v1"})
    [note] = all_notes(app)

    form = client.get(f"/{note.id}/edit").get_data(as_text=True)
    assert 'value="Draft"' in form
    assert "v1</textarea>" in form

    response = client.post(f"/{note.id}/edit", data={"title": "Final", "body": "v2"})
    assert response.status_code == 302
    assert response.headers["Location"] == f"{prefix}/"
    [note] = all_notes(app)
    assert (note.title, note.body) == ("Final", "v2")
    assert note.updated is not None
    page = client.get("/").get_data(as_text=True)
    assert titles(page) == ["Final"]
    assert "edited" in page


@pytest.mark.usefixtures("alice")
def test_delete(app: Flask, client: FlaskClient, prefix: str) -> None:
    client.post("/create", data={"title": "Doomed"})
    [note] = all_notes(app)
    form = client.get(f"/{note.id}/edit").get_data(as_text=True)
    assert f'action="{prefix}/{note.id}/delete"' in form

    assert client.get(f"/{note.id}/delete").status_code == 405
    response = client.post(f"/{note.id}/delete")
    assert response.status_code == 302
    assert response.headers["Location"] == f"{prefix}/"
    assert all_notes(app) == []
    assert "Doomed" not in client.get("/").get_data(as_text=True)


@pytest.mark.usefixtures("alice")
def test_pagination(app: Flask, client: FlaskClient, prefix: str) -> None:
    app.config["NOTES_PER_PAGE"] = 2  # read on each request, so it can change after the build
    for title in ("one", "two", "three"):
        client.post("/create", data={"title": title})

    first = client.get("/").get_data(as_text=True)
    assert titles(first) == ["three", "two"]
    assert f'href="{prefix}/?page=2"' in first
    assert "Page 1 of 2" in first

    second = client.get("/?page=2").get_data(as_text=True)
    assert titles(second) == ["one"]
    assert f'href="{prefix}/?page=1"' in second
    assert "?page=3" not in second

    assert client.get("/?page=3").status_code == 404


def test_only_own_notes_are_listed(client: FlaskClient, auth: AuthActions) -> None:
    auth.register("alice")
    client.post("/create", data={"title": "alice's secret"})
    auth.logout()
    auth.register("bob")
    client.post("/create", data={"title": "bob's note"})

    assert titles(client.get("/").get_data(as_text=True)) == ["bob&#39;s note"]


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/{id}/edit"), ("POST", "/{id}/edit"), ("POST", "/{id}/delete")]
)
def test_another_users_note_is_not_found(
    app: Flask, client: FlaskClient, auth: AuthActions, method: str, path: str
) -> None:
    auth.register("alice")
    client.post("/create", data={"title": "alice's secret", "body": "keep out"})
    auth.logout()
    auth.register("bob")
    [note] = all_notes(app)

    response = client.open(
        path.format(id=note.id), method=method, data={"title": "pwned", "body": ""}
    )
    assert response.status_code == 404
    assert "secret" not in response.get_data(as_text=True)
    [note] = all_notes(app)
    assert (note.title, note.body) == ("alice's secret", "keep out")


@pytest.mark.usefixtures("alice")
@pytest.mark.parametrize(("method", "path"), [("GET", "/999/edit"), ("POST", "/999/delete")])
def test_missing_note_is_not_found(client: FlaskClient, method: str, path: str) -> None:
    assert client.open(path, method=method).status_code == 404
