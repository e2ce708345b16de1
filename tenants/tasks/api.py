"""The API's root, ``/api/v1/``: which tenant this is and which API version it speaks.

It needs no token, so a client (or a health check) can find the API before it has one::

    $ curl http://127.0.0.1:5000/globex/api/v1/
    {"tenant": "Globex Tasks", "version": 1}
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

#: The API version in the URL; a breaking change gets new blueprints under ``/api/v2``.
VERSION = 1

#: Where every blueprint of this version is mounted, chosen once: :func:`tenants.tasks.create_app`
#: registers them under it.
PREFIX = f"/api/v{VERSION}"

bp = Blueprint("api", __name__)


@bp.get("/")
def index() -> dict[str, Any]:
    """The tenant's site name (its tenant name unless configured) and the API version."""
    return {"tenant": current_app.config["SITE_NAME"], "version": VERSION}
