"""Tasks, ``/api/v1/tasks``: list (paginated, filtered), create, read, change and delete.

Every request needs a bearer token (:func:`.auth.require_token`, run before each view of the
blueprint, so a new view cannot forget it). The API reads no cookie, which is why it is exempt
from CSRF protection by design: a cross-site request cannot carry a token. Every query is
filtered by owner, so another user's task is simply not found (404)::

    GET /api/v1/tasks?done=false&due_before=2026-04-01&q=tax&page=2&per_page=50
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, current_app, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from .auth import current_user, require_token
from .extensions import db
from .models import Task, as_utc
from .validation import (
    Field,
    boolean,
    boolean_text,
    iso_date,
    json_object,
    nullable,
    positive_int_text,
    text,
    validate,
    validate_query,
)

#: Mounted at ``/tasks`` under the API's prefix (:func:`tenants.tasks.create_app`).
bp = Blueprint("tasks", __name__)
bp.before_request(require_token)

#: A task's writable fields; PATCH takes any subset of them.
TASK_FIELDS = {
    "title": Field(text(200, blank=False), required=True),
    "notes": Field(text(20_000)),
    "done": Field(boolean),
    "due": Field(nullable(iso_date)),
}

#: The list's query parameters; any other is refused, so a typo (``?don=true``) cannot
#: silently return everything.
LIST_PARAMETERS = {
    "page": Field(positive_int_text),
    "per_page": Field(positive_int_text),
    "done": Field(boolean_text),
    "due_before": Field(iso_date),
    "q": Field(text(200)),
}


def task_json(task: Task) -> dict[str, Any]:
    """A task as the API shows it, with the absolute URL it lives at."""
    return {
        "id": task.id,
        "title": task.title,
        "notes": task.notes,
        "done": task.done,
        "due": task.due.isoformat() if task.due is not None else None,
        "created": _timestamp(task.created),
        "updated": _timestamp(task.updated),
        "url": url_for("tasks.get_task", task_id=task.id, _external=True),
    }


def _timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC to the second: ``2026-03-01T09:30:00Z``."""
    return as_utc(moment).isoformat(timespec="seconds").replace("+00:00", "Z")


def _own_task(task_id: int) -> Task:
    """The current user's task ``task_id``, or a 404 (also when it is someone else's)."""
    task: Task = db.first_or_404(
        select(Task).where(Task.id == task_id, Task.user_id == current_user().id),
        description=f"No task {task_id}: it does not exist or is not yours.",
    )
    return task


@bp.get("")
def list_tasks() -> ResponseReturnValue:
    """The user's tasks, newest first, a page at a time, with links to the next and previous.

    ``per_page`` (default ``TASKS_PER_PAGE``) is capped at ``TASKS_MAX_PER_PAGE``; a page past
    the end is empty, not an error. Filters: ``done``, ``due_before`` (tasks due strictly
    before that day; tasks without a due date are left out) and ``q`` (in the title, any case).
    """
    params = validate_query(request.args, LIST_PARAMETERS)
    page = params.get("page", 1)
    per_page = min(
        params.get("per_page", current_app.config["TASKS_PER_PAGE"]),
        current_app.config["TASKS_MAX_PER_PAGE"],
    )
    # id order is creation order, and unique: pages never overlap or skip a task.
    statement = select(Task).where(Task.user_id == current_user().id).order_by(Task.id.desc())
    if "done" in params:
        statement = statement.where(Task.done == params["done"])
    if "due_before" in params:
        statement = statement.where(Task.due < params["due_before"])
    if "q" in params:
        statement = statement.where(Task.title.icontains(params["q"], autoescape=True))
    pagination = db.paginate(
        statement, page=page, per_page=per_page, max_per_page=None, error_out=False
    )

    # The links repeat the filters as the client wrote them, with the page size actually used.
    filters = {k: request.args[k] for k in ("done", "due_before", "q") if k in params}

    def link(number: int) -> str:
        return url_for(
            "tasks.list_tasks", page=number, per_page=per_page, **filters, _external=True
        )

    return {
        "items": [task_json(task) for task in pagination.items],
        "page": page,
        "per_page": per_page,
        "total": pagination.total,
        "links": {
            "next": link(page + 1) if pagination.has_next else None,
            "prev": link(page - 1) if page > 1 else None,
        },
    }


@bp.post("")
def create_task() -> ResponseReturnValue:
    """Create a task from ``title`` (required), ``notes``, ``done`` and ``due``: 201 + Location."""
    values = validate(json_object(), TASK_FIELDS)
    task = Task(user_id=current_user().id, **values)
    db.session.add(task)
    db.session.commit()
    body = task_json(task)
    return body, 201, {"Location": body["url"]}


@bp.get("/<int:task_id>")
def get_task(task_id: int) -> ResponseReturnValue:
    """One of the user's tasks."""
    return task_json(_own_task(task_id))


@bp.patch("/<int:task_id>")
def update_task(task_id: int) -> ResponseReturnValue:
    """Change any of a task's fields; ``"due": null`` removes its due date."""
    task = _own_task(task_id)
    for name, value in validate(json_object(), TASK_FIELDS, partial=True).items():
        setattr(task, name, value)
    db.session.commit()
    return task_json(task)


@bp.delete("/<int:task_id>")
def delete_task(task_id: int) -> ResponseReturnValue:
    """Delete one of the user's tasks: 204, no body."""
    db.session.delete(_own_task(task_id))
    db.session.commit()
    response = current_app.response_class(status=204)
    del response.headers["Content-Type"]  # there is no content to have a type
    return response
