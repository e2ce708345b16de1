"""Friendly error pages, registered by :func:`tenants.notes.create_app`.

They render templates only: no database access, so the 500 page still works when the
database is what failed (``500.html`` also leaves out the user menu, which would query it)::

    app.register_error_handler(404, errors.not_found)
"""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException


def not_found(error: HTTPException) -> tuple[str, int]:
    """Render the 404 page."""
    return render_template("404.html"), 404


def internal_error(error: HTTPException) -> tuple[str, int]:
    """Render the 500 page: never a traceback; the error is already in the log."""
    return render_template("500.html"), 500


def unavailable(error: HTTPException) -> ResponseReturnValue:
    """Render the 503 page (the dispatcher answers 503 while the database is unreachable),
    keeping the ``Retry-After`` the error carries."""
    headers = dict(error.get_headers())
    retry_after = headers.get("Retry-After")
    return render_template("503.html"), 503, {"Retry-After": retry_after} if retry_after else {}
