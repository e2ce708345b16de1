"""Bad input is a problem document: 422 with an ``errors`` array, or 400/415 for a bad body."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

pytestmark = pytest.mark.tenant_app("tenants.tasks")

VALIDATION_TYPE = "/api/v1/problems/validation-error"  # under base_url: an absolute URL
DATE = "Must be a date written YYYY-MM-DD, such as 2026-03-01."
BOOLEAN = "Must be true or false, not {}."
STRING = "Must be a string, not {}."
TASK_FIELDS = "Unknown field; expected one of: done, due, notes, title."
PARAMETERS = "Unknown field; expected one of: done, due_before, page, per_page, q."
NUMBER = "Must be a whole number from 1 to 999999999."


@pytest.fixture
def validation_type(base_url: str) -> str:
    """The validation problem's type: an absolute URL, under the tenant's mount."""
    return f"{base_url}{VALIDATION_TYPE}"


def errors_of(
    response: TestResponse, validation_type: str, status: int = 422
) -> list[dict[str, str]]:
    """The ``errors`` of a validation problem, after checking the rest of the document."""
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    problem = response.json
    assert problem is not None
    count = len(problem["errors"])
    detail = "A field is not valid" if count == 1 else f"{count} fields are not valid"
    assert problem == {
        "type": validation_type,
        "title": "Your request is not valid.",
        "status": 422,
        "detail": f"{detail}; 'errors' says what is wrong with each.",
        "errors": problem["errors"],
    }
    errors: list[dict[str, str]] = problem["errors"]
    return errors


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, [{"field": "title", "detail": "This field is required."}]),
        ({"title": "  "}, [{"field": "title", "detail": "Must not be empty."}]),
        (
            {"title": "x" * 201},
            [{"field": "title", "detail": "Must be at most 200 characters long."}],
        ),
        ({"title": None}, [{"field": "title", "detail": STRING.format("null")}]),
        ({"title": 7}, [{"field": "title", "detail": STRING.format("a number")}]),
        ({"title": ["a"]}, [{"field": "title", "detail": STRING.format("an array")}]),
        ({"title": "x", "notes": None}, [{"field": "notes", "detail": STRING.format("null")}]),
        (
            {"title": "x", "notes": "n" * 20_001},
            [{"field": "notes", "detail": "Must be at most 20000 characters long."}],
        ),
        ({"title": "x", "done": "true"}, [{"field": "done", "detail": BOOLEAN.format("a string")}]),
        ({"title": "x", "done": 1}, [{"field": "done", "detail": BOOLEAN.format("a number")}]),
        ({"title": "x", "done": None}, [{"field": "done", "detail": BOOLEAN.format("null")}]),
        ({"title": "x", "due": "2026-02-30"}, [{"field": "due", "detail": DATE}]),
        ({"title": "x", "due": "20260301"}, [{"field": "due", "detail": DATE}]),
        ({"title": "x", "due": "2026-03-01T10:00"}, [{"field": "due", "detail": DATE}]),
        ({"title": "x", "due": 20260301}, [{"field": "due", "detail": DATE}]),
        ({"title": "x", "id": 5}, [{"field": "id", "detail": TASK_FIELDS}]),
        ({"title": "x", "user_id": 2}, [{"field": "user_id", "detail": TASK_FIELDS}]),
        (
            {"titel": "x", "done": "no", "due": "soon"},
            [
                {"field": "titel", "detail": TASK_FIELDS},
                {"field": "title", "detail": "This field is required."},
                {"field": "done", "detail": BOOLEAN.format("a string")},
                {"field": "due", "detail": DATE},
            ],
        ),
    ],
    ids=[
        "missing-title",
        "blank-title",
        "long-title",
        "null-title",
        "number-title",
        "array-title",
        "null-notes",
        "long-notes",
        "string-done",
        "number-done",
        "null-done",
        "impossible-date",
        "compact-date",
        "datetime",
        "number-date",
        "unknown-id",
        "unknown-owner",
        "every-problem-at-once",
    ],
)
def test_create_refuses(
    client: FlaskClient,
    alice: dict[str, str],
    validation_type: str,
    body: dict[str, Any],
    errors: list[dict[str, str]],
) -> None:
    response = client.post("/api/v1/tasks", headers=alice, json=body)
    assert errors_of(response, validation_type) == errors
    assert client.get("/api/v1/tasks", headers=alice).json["total"] == 0  # type: ignore[index]


def test_patch_refuses_and_changes_nothing(
    client: FlaskClient, alice: dict[str, str], validation_type: str
) -> None:
    task = client.post("/api/v1/tasks", headers=alice, json={"title": "Keep"}).json
    assert task is not None
    response = client.patch(
        f"/api/v1/tasks/{task['id']}", headers=alice, json={"title": "", "done": "yes", "x": 1}
    )
    assert errors_of(response, validation_type) == [
        {"field": "x", "detail": TASK_FIELDS},
        {"field": "title", "detail": "Must not be empty."},
        {"field": "done", "detail": BOOLEAN.format("a string")},
    ]
    assert client.get(f"/api/v1/tasks/{task['id']}", headers=alice).json == task


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (
            "{",
            "The request body is not valid JSON: Expecting property name enclosed in double "
            "quotes: line 1 column 2 (char 1).",
        ),
        ("", "The request body is not valid JSON: Expecting value: line 1 column 1 (char 0)."),
        ('{"title": NaN}', "The request body is not valid JSON: NaN is not a JSON value."),
        ('["title"]', "The request body must be a JSON object, not an array."),
        ('"title"', "The request body must be a JSON object, not a string."),
        ("null", "The request body must be a JSON object, not null."),
    ],
    ids=["truncated", "empty", "nan", "array", "string", "null"],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_malformed_body_is_400(
    client: FlaskClient, alice: dict[str, str], method: str, data: str, detail: str
) -> None:
    task = client.post("/api/v1/tasks", headers=alice, json={"title": "x"}).json
    assert task is not None
    url = "/api/v1/tasks" if method == "POST" else f"/api/v1/tasks/{task['id']}"
    response = client.open(
        url, method=method, headers=alice, data=data, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.json == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": detail,
    }


def test_invalid_utf8_is_400(client: FlaskClient, alice: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/tasks", headers=alice, data=b'{"title": "\xff"}', content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["detail"].startswith("The request body is not valid JSON: ")


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_body_must_be_sent_as_json(
    client: FlaskClient, alice: dict[str, str], content_type: str | None
) -> None:
    response = client.post(
        "/api/v1/tasks", headers=alice, data='{"title": "x"}', content_type=content_type
    )
    assert response.status_code == 415
    assert response.mimetype == "application/problem+json"
    assert response.json is not None
    assert response.json["detail"] == (
        "Send the body as JSON, with 'Content-Type: application/json'."
    )


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ("?page=0", [{"field": "page", "detail": NUMBER}]),
        ("?page=-1", [{"field": "page", "detail": NUMBER}]),
        ("?page=two", [{"field": "page", "detail": NUMBER}]),
        ("?page=1000000000", [{"field": "page", "detail": NUMBER}]),
        ("?per_page=0", [{"field": "per_page", "detail": NUMBER}]),
        ("?per_page=1.5", [{"field": "per_page", "detail": NUMBER}]),
        ("?done=yes", [{"field": "done", "detail": "Must be true or false."}]),
        ("?done=True", [{"field": "done", "detail": "Must be true or false."}]),
        ("?due_before=tomorrow", [{"field": "due_before", "detail": DATE}]),
        ("?q=" + "x" * 201, [{"field": "q", "detail": "Must be at most 200 characters long."}]),
        ("?don=true", [{"field": "don", "detail": PARAMETERS}]),
        (
            "?done=true&done=false",
            [{"field": "done", "detail": "Given more than once; give it once."}],
        ),
        (
            "?page=0&sort=title&due_before=x",
            [
                {"field": "sort", "detail": PARAMETERS},
                {"field": "page", "detail": NUMBER},
                {"field": "due_before", "detail": DATE},
            ],
        ),
    ],
)
def test_list_refuses_bad_parameters(
    client: FlaskClient,
    alice: dict[str, str],
    validation_type: str,
    query: str,
    errors: list[dict[str, str]],
) -> None:
    response = client.get(f"/api/v1/tasks{query}", headers=alice)
    assert errors_of(response, validation_type) == errors


def test_validation_type_is_documented_at_its_uri(
    client: FlaskClient, validation_type: str
) -> None:
    response = client.get("/api/v1/problems/validation-error")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    doc = response.json
    assert doc is not None
    assert doc["type"] == validation_type
    assert (doc["title"], doc["status"]) == ("Your request is not valid.", 422)
    assert "'errors' lists each one" in doc["description"]
