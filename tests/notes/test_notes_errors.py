"""Error pages: friendly, in the site's layout, and never a traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tenants.notes.extensions import db

if TYPE_CHECKING:
    from conftest import AuthActions
    from flask import Flask
    from flask.testing import FlaskClient

pytestmark = pytest.mark.tenant_app("tenants.notes")


def test_site_name_in_title_and_header(client: FlaskClient, site_name: str, prefix: str) -> None:
    page = client.get("/auth/login").get_data(as_text=True)
    assert f"<title>Log in · {site_name}</title>" in page
    assert f'<a class="brand" href="{prefix}/">{site_name}</a>' in page


def test_friendly_404(client: FlaskClient, site_name: str, prefix: str) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert "<h1>Page not found</h1>" in page
    assert f"<title>Page not found · {site_name}</title>" in page
    assert f'href="{prefix}/static/style.css"' in page


def test_friendly_500_without_traceback(
    app: Flask, client: FlaskClient, auth: AuthActions, site_name: str
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False  # serve the error page as production would

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("internal detail: password=hunter2")

    auth.register()
    response = client.get("/boom")
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "<h1>Something went wrong</h1>" in page
    assert f"<title>Something went wrong · {site_name}</title>" in page
    for leak in ("Traceback", "RuntimeError", "hunter2"):
        assert leak not in page


def test_broken_database_answers_503_without_traceback(
    app: Flask, client: FlaskClient, auth: AuthActions
) -> None:
    """As the dispatcher builds it, the app answers 503 (retry later) when its database fails."""
    app.config["PROPAGATE_EXCEPTIONS"] = False
    auth.register()
    with app.app_context():
        db.drop_all()  # every query, including loading the logged-in user, now fails

    response = client.get("/")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    page = response.get_data(as_text=True)
    assert "Traceback" not in page
    assert "OperationalError" not in page
    assert "Back in a moment" in page  # the app's own page, with its SITE_NAME
    assert app.config["SITE_NAME"] in page
