"""Every error the API answers is an RFC 9457 problem document (``application/problem+json``).

A plain HTTP error (401, 404, 405, ...) has ``type: about:blank`` and the status phrase as its
title; a validation error has its own type, a URI under the app that documents it, and an
``errors`` array of ``{field, detail}``. A 500 never carries the exception: that is logged::

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "detail": "No task 42: it does not exist or is not yours."}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, url_for
from werkzeug.exceptions import HTTPException, InternalServerError, NotFound

from .validation import ValidationError

PROBLEM_JSON = "application/problem+json"

#: Mounted at ``/problems`` under the API's prefix (:func:`tenants.tasks.create_app`).
bp = Blueprint("problems", __name__)


@dataclass(frozen=True, slots=True)
class ProblemType:
    """A problem type of this API, documented at its ``type`` URI."""

    title: str
    status: int
    description: str


#: The API's own problem types, by the last segment of their URI.
PROBLEM_TYPES = {
    "validation-error": ProblemType(
        title="Your request is not valid.",
        status=422,
        description="One or more fields of the JSON body, or parameters of the query string, "
        "are unknown, missing or invalid. 'errors' lists each one as {\"field\": name, "
        '"detail": what is wrong}; fix them all and send the request again.',
    ),
}


@bp.get("/<name>")
def describe(name: str) -> dict[str, Any]:
    """Document a problem type: what its ``type`` URI resolves to."""
    problem_type = PROBLEM_TYPES.get(name)
    if problem_type is None:
        raise NotFound(f"This API has no problem type {name!r}.")
    return {
        "type": url_for("problems.describe", name=name, _external=True),
        "title": problem_type.title,
        "status": problem_type.status,
        "description": problem_type.description,
    }


def problem(
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    title: str,
    headers: Iterable[tuple[str, str]] = (),
    **extensions: Any,
) -> Response:
    """A problem document response."""
    body = {"type": type_, "title": title, "status": status, "detail": detail, **extensions}
    response = jsonify(body)  # formatted as every other JSON answer
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    response.headers.extend(headers)
    return response


def http_error(error: HTTPException) -> Response:
    """Any HTTP error raised or aborted with; its headers (``Allow``, ...) are kept."""
    if error.response is not None:  # abort(response): the view built its own answer
        return error.response  # type: ignore[return-value]
    status = error.code or 500
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    return problem(status, error.description or "", title=error.name, headers=headers)


def internal_error(error: InternalServerError) -> Response:
    """An unhandled exception: a fixed message, never the exception (Flask has logged it)."""
    detail = "The server failed to complete the request. The error has been logged."
    return problem(500, detail, title=error.name)


def validation_error(error: ValidationError) -> Response:
    """422 with one ``errors`` entry per invalid field."""
    problem_type = PROBLEM_TYPES["validation-error"]
    count = len(error.errors)
    detail = "A field is not valid" if count == 1 else f"{count} fields are not valid"
    return problem(
        problem_type.status,
        f"{detail}; 'errors' says what is wrong with each.",
        type_=url_for("problems.describe", name="validation-error", _external=True),
        title=problem_type.title,
        errors=[{"field": e.field, "detail": e.detail} for e in error.errors],
    )
