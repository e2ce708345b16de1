"""Create, read, change and delete a task; a user only ever sees their own tasks."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Accounts
    from flask.testing import FlaskClient

pytestmark = pytest.mark.tenant_app("tenants.tasks")

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def create(client: FlaskClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = client.post("/api/v1/tasks", headers=headers, json={"title": "Task", **fields})
    assert response.status_code == 201, response.json
    assert response.json is not None
    return response.json


def path(task: dict[str, Any]) -> str:
    """The path of the task's URL inside the app, to request it with the test client."""
    return f"/api/v1/tasks/{task['id']}"


def test_create_returns_201_location_and_the_task(
    client: FlaskClient, alice: dict[str, str], base_url: str
) -> None:
    body = {"title": "Renew passport", "notes": "photo first", "due": "2026-12-01"}
    response = client.post("/api/v1/tasks", headers=alice, json=body)
    assert response.status_code == 201
    assert response.mimetype == "application/json"
    task = response.json
    assert task is not None
    assert response.headers["Location"] == f"{base_url}/api/v1/tasks/{task['id']}"
    assert task == {
        "id": task["id"],
        "title": "Renew passport",
        "notes": "photo first",
        "done": False,
        "due": "2026-12-01",
        "created": task["created"],
        "updated": task["created"],
        "url": response.headers["Location"],
    }
    assert TIMESTAMP.fullmatch(task["created"])
    assert client.get(path(task), headers=alice).json == task


def test_create_with_defaults_and_stripped_title(
    client: FlaskClient, alice: dict[str, str]
) -> None:
    task = create(client, alice, title="  Buy milk \n")
    assert (task["title"], task["notes"], task["done"], task["due"]) == (
        "Buy milk",
        "",
        False,
        None,
    )


def test_patch_changes_only_what_is_given(client: FlaskClient, alice: dict[str, str]) -> None:
    task = create(client, alice, title="Taxes", notes="receipts", due="2026-04-30")
    response = client.patch(path(task), headers=alice, json={"done": True})
    assert response.status_code == 200
    changed = response.json
    assert changed is not None
    unchanged = {k: v for k, v in task.items() if k != "updated"}
    assert {k: v for k, v in changed.items() if k != "updated"} == {**unchanged, "done": True}
    assert changed["updated"] >= task["updated"]

    changed = client.patch(path(task), headers=alice, json={"due": None, "title": "Tax"}).json
    assert changed is not None
    assert (changed["title"], changed["due"], changed["done"]) == ("Tax", None, True)
    assert client.get(path(task), headers=alice).json == changed


def test_empty_patch_changes_nothing(client: FlaskClient, alice: dict[str, str]) -> None:
    task = create(client, alice)
    response = client.patch(path(task), headers=alice, json={})
    assert response.status_code == 200
    assert response.json == task


def test_delete(client: FlaskClient, alice: dict[str, str]) -> None:
    task = create(client, alice)
    response = client.delete(path(task), headers=alice)
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    assert client.get(path(task), headers=alice).status_code == 404
    assert client.delete(path(task), headers=alice).status_code == 404


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_another_users_task_is_not_found(
    client: FlaskClient, accounts: Accounts, method: str
) -> None:
    alices = create(client, accounts.headers("alice"), title="Alice's secret")
    response = client.open(path(alices), method=method, headers=accounts.headers("bob"), json={})
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.json is not None
    # The same answer as for a task that does not exist: nothing is revealed.
    assert response.json["detail"] == f"No task {alices['id']}: it does not exist or is not yours."
    assert client.get(path(alices), headers=accounts.headers("alice")).json == alices


def test_lists_are_per_user(client: FlaskClient, accounts: Accounts) -> None:
    create(client, accounts.headers("alice"), title="Alice's")
    create(client, accounts.headers("bob"), title="Bob's")
    for user in ("alice", "bob"):
        listed = client.get("/api/v1/tasks", headers=accounts.headers(user)).json
        assert listed is not None
        assert [task["title"] for task in listed["items"]] == [f"{user.title()}'s"]
        assert listed["total"] == 1
