"""Tasks: a JSON API of per-user to-do lists, the second app tenants run.

Same factory pattern as :mod:`tenants.notes`, different shape: no pages, no sessions, no
cookies. Clients authenticate with API tokens made by a CLI command, and every error is an
RFC 9457 problem document. The dispatcher calls :func:`create_app` once per tenant::

    app = create_app(tenant_config)   # done by the dispatcher, or by a test
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask
from werkzeug.exceptions import HTTPException, InternalServerError

if TYPE_CHECKING:
    from dispatcher.tenant import TenantConfig


def create_app(tenant_config: TenantConfig) -> Flask:
    """Build one tenant's tasks API from its resolved settings.

    Settings are layered so that the operator has the last word: built-in defaults, then the
    tenant's ``config`` from tenants.yaml, then ``config.py`` in the tenant's instance folder.
    ``SECRET_KEY`` is deliberately not set here (the dispatcher gives each tenant its own; this
    app does not even use it) and the schema is not created here: the dispatcher creates a new
    tenant's database from ``migrations/`` at head, and ``python -m dispatcher migrate``
    upgrades existing ones.
    """
    app = Flask(__name__, instance_path=tenant_config.instance_path, instance_relative_config=True)
    app.config.from_mapping(
        SITE_NAME=tenant_config.name,
        SQLALCHEMY_DATABASE_URI=tenant_config.database_uri,
        TASKS_PER_PAGE=20,
        TASKS_MAX_PER_PAGE=100,
    )
    app.config.from_mapping(tenant_config.config)
    app.config.from_pyfile("config.py", silent=True)

    from .extensions import db, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).with_name("migrations")))

    from . import api, commands, problems, tasks
    from .validation import ValidationError

    # The version prefix is chosen here, once: a v2 would register its blueprints beside these.
    app.register_blueprint(api.bp, url_prefix=api.PREFIX)
    app.register_blueprint(tasks.bp, url_prefix=api.PREFIX + "/tasks")
    app.register_blueprint(problems.bp, url_prefix=api.PREFIX + "/problems")
    commands.init_app(app)

    # JSON only: every error, the API's or the router's (unknown URL, wrong method), is a
    # problem document. The more specific 500 handler wins over the HTTPException one.
    app.register_error_handler(HTTPException, problems.http_error)
    app.register_error_handler(InternalServerError, problems.internal_error)
    app.register_error_handler(ValidationError, problems.validation_error)

    return app
