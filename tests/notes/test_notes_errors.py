"""Error pages: friendly, in the site's layout, and never a traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tenants.notes.extensions import db

if TYPE_CHECKING:
    from conftest import AuthActions, MakeApp
    from flask import Flask
    from flask.testing import FlaskClient


def test_site_name_in_title_and_header(make_app: MakeApp) -> None:
    app = make_app(SITE_NAME="Acme Widgets")
    page = app.test_client().get("/auth/login").get_data(as_text=True)
    assert "<title>Log in · Acme Widgets</title>" in page
    assert '<a class="brand" href="/">Acme Widgets</a>' in page


def test_friendly_404(client: FlaskClient) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert "<h1>Page not found</h1>" in page
    assert "<title>Page not found · Acme</title>" in page
    assert 'href="/static/style.css"' in page


def test_friendly_500_without_traceback(app: Flask, client: FlaskClient, auth: AuthActions) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False  # serve the error page as production would

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("internal detail: password=hunter2")

    auth.register()
    response = client.get("/boom")
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "<h1>Something went wrong</h1>" in page
    assert "<title>Something went wrong · Acme</title>" in page
    for leak in ("Traceback", "RuntimeError", "hunter2"):
        assert leak not in page


def test_500_page_works_when_the_database_is_broken(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    auth.register()
    with app.app_context():
        db.drop_all()  # every query, including loading the logged-in user, now fails

    response = client.get("/")
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "<h1>Something went wrong</h1>" in page
    assert "Traceback" not in page
    assert "OperationalError" not in page
