"""Errors outside validation are problem documents too: 404, 405, 500, never a traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tenants.tasks.extensions import db

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient

pytestmark = pytest.mark.tenant_app("tenants.tasks")

NOT_FOUND = (
    "The requested URL was not found on the server. If you entered the URL manually please "
    "check your spelling and try again."
)


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("/", NOT_FOUND),
        ("/api/v2/", NOT_FOUND),
        ("/api/v1/tasks/", NOT_FOUND),
        ("/api/v1/tasks/abc", NOT_FOUND),
        ("/api/v1/tasks/999", "No task 999: it does not exist or is not yours."),
        ("/api/v1/problems/nope", "This API has no problem type 'nope'."),
    ],
)
def test_not_found(client: FlaskClient, alice: dict[str, str], url: str, detail: str) -> None:
    response = client.get(url, headers=alice)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.json == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": detail,
    }


@pytest.mark.parametrize(
    ("method", "url", "allow"),
    [
        ("PUT", "/api/v1/tasks/1", {"GET", "HEAD", "OPTIONS", "PATCH", "DELETE"}),
        ("DELETE", "/api/v1/tasks", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("POST", "/api/v1/", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_method_not_allowed(
    client: FlaskClient, alice: dict[str, str], method: str, url: str, allow: set[str]
) -> None:
    response = client.open(url, method=method, headers=alice)
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
    assert set(response.headers["Allow"].split(", ")) == allow
    assert response.json == {
        "type": "about:blank",
        "title": "Method Not Allowed",
        "status": 405,
        "detail": "The method is not allowed for the requested URL.",
    }


def test_500_never_leaks_the_exception(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer as in production

    @app.get("/api/v1/boom")
    def boom() -> str:
        raise RuntimeError("internal detail: password=hunter2")

    response = client.get("/api/v1/boom")
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    assert response.json == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "The server failed to complete the request. The error has been logged.",
    }
    for leak in ("Traceback", "RuntimeError", "hunter2"):
        assert leak not in response.get_data(as_text=True)
    assert "hunter2" in caplog.text  # logged for the operator instead


def test_503_when_the_database_fails_is_a_problem_too(
    app: Flask, client: FlaskClient, alice: dict[str, str]
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    with app.app_context():
        db.session.execute(db.text("DROP TABLE tasks"))
        db.session.commit()
    response = client.get("/api/v1/tasks", headers=alice)
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert response.mimetype == "application/problem+json"
