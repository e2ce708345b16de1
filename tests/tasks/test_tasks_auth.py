"""Bearer tokens: anything but a known token gets 401 problem+json with ``WWW-Authenticate``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from tenants.tasks.extensions import db
from tenants.tasks.models import ApiToken

if TYPE_CHECKING:
    from conftest import Accounts
    from flask import Flask
    from flask.testing import FlaskClient

pytestmark = pytest.mark.tenant_app("tenants.tasks")

NEEDS_TOKEN = "This endpoint needs an API token: send 'Authorization: Bearer <token>'."
BEARER_ONLY = "This API takes bearer tokens only: send 'Authorization: Bearer <token>'."
MALFORMED = "The Authorization header must be 'Bearer <token>'."
UNKNOWN = "The API token is not valid: it is unknown or was revoked."


@pytest.mark.parametrize(
    ("authorization", "detail", "challenge"),
    [
        (None, NEEDS_TOKEN, "Bearer"),
        ("", NEEDS_TOKEN, "Bearer"),
        ("Basic YWxpY2U6c2VjcmV0", BEARER_ONLY, "Bearer"),
        ("Token abc", BEARER_ONLY, "Bearer"),
        ("Bearer", MALFORMED, "Bearer error=invalid_token"),
        ("Bearer   ", MALFORMED, "Bearer error=invalid_token"),
        ("Bearer a=b", MALFORMED, "Bearer error=invalid_token"),
        ("Bearer not-a-token", UNKNOWN, "Bearer error=invalid_token"),
        ("Bearer not a token", UNKNOWN, "Bearer error=invalid_token"),
    ],
    ids=[
        "missing",
        "empty",
        "basic",
        "other-scheme",
        "bearer-alone",
        "bearer-blank",
        "bearer-parameters",
        "unknown",
        "spaces",
    ],
)
@pytest.mark.parametrize(
    ("method", "url"),
    [("GET", "/api/v1/tasks"), ("POST", "/api/v1/tasks"), ("DELETE", "/api/v1/tasks/1")],
)
def test_refused(
    client: FlaskClient,
    accounts: Accounts,
    method: str,
    url: str,
    authorization: str | None,
    detail: str,
    challenge: str,
) -> None:
    accounts.token("alice")  # a real token exists; none of these is it
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.open(url, method=method, headers=headers, json={"title": "x"})
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == challenge
    assert response.json == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": detail,
    }


def test_scheme_is_case_insensitive(client: FlaskClient, accounts: Accounts) -> None:
    # RFC 9110 section 11.1: auth schemes are case-insensitive.
    headers = {"Authorization": f"bearer {accounts.token('alice')}"}
    assert client.get("/api/v1/tasks", headers=headers).status_code == 200


def test_token_of_another_tenant_is_unknown(
    client: FlaskClient, accounts: Accounts, app: Flask
) -> None:
    token = accounts.token("alice")
    with app.app_context():
        db.session.execute(db.delete(ApiToken))  # as if it were issued by another database
        db.session.commit()
    response = client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_last_used_is_recorded_at_most_once_a_minute(
    client: FlaskClient, alice: dict[str, str], app: Flask
) -> None:
    def last_used() -> datetime | None:
        with app.app_context():
            return db.session.scalar(select(ApiToken.last_used))

    assert last_used() is None
    client.get("/api/v1/tasks", headers=alice)
    first = last_used()
    assert first is not None
    client.get("/api/v1/tasks", headers=alice)
    assert last_used() == first  # a second request within the minute writes nothing

    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with app.app_context():
        db.session.execute(db.update(ApiToken).values(last_used=long_ago))
        db.session.commit()
    client.get("/api/v1/tasks", headers=alice)
    latest = last_used()
    assert latest is not None and latest.replace(tzinfo=None) > first.replace(tzinfo=None)


@pytest.mark.parametrize("url", ["/api/v1/", "/api/v1/problems/validation-error"])
def test_public_endpoints_need_no_token(client: FlaskClient, url: str) -> None:
    assert client.get(url).status_code == 200


def test_no_cookie_is_set_or_needed(client: FlaskClient, alice: dict[str, str]) -> None:
    # Tokens are the only credentials, which is why the API is exempt from CSRF checks.
    response = client.post("/api/v1/tasks", headers=alice, json={"title": "x"})
    assert response.status_code == 201
    assert "Set-Cookie" not in response.headers
    assert "Set-Cookie" not in client.get("/api/v1/tasks", headers=alice).headers
