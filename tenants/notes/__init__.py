"""Notes: a small per-user notebook, the first app tenants run (shaped like Flask's flaskr).

The dispatcher imports this package and calls :func:`create_app` once per tenant, each time
with that tenant's own instance folder and database, so the function builds everything from
its argument and nothing happens at import time::

    app = create_app(tenant_config)   # done by the dispatcher, or by a test
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask

if TYPE_CHECKING:
    from dispatcher.tenant import TenantConfig


def create_app(tenant_config: TenantConfig) -> Flask:
    """Build one tenant's notes app from its resolved settings.

    Settings are layered so that the operator has the last word: built-in defaults, then the
    tenant's ``config`` from tenants.yaml, then ``config.py`` in the tenant's instance folder.
    ``SECRET_KEY`` is deliberately not set here (the dispatcher gives each tenant its own) and
    the schema is not created here: the dispatcher creates a new tenant's database from
    ``migrations/`` at head, and ``python -m dispatcher migrate`` upgrades existing ones.
    """
    app = Flask(__name__, instance_path=tenant_config.instance_path, instance_relative_config=True)
    app.config.from_mapping(
        SITE_NAME=tenant_config.name.replace("-", " ").title(),
        SQLALCHEMY_DATABASE_URI=tenant_config.database_uri,
        NOTES_PER_PAGE=20,
    )
    app.config.from_mapping(tenant_config.config)
    app.config.from_pyfile("config.py", silent=True)

    from .extensions import csrf, db, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).with_name("migrations")))
    csrf.init_app(app)

    from . import auth, errors, notes

    app.register_blueprint(auth.bp)
    app.register_blueprint(notes.bp)

    app.register_error_handler(404, errors.not_found)
    app.register_error_handler(500, errors.internal_error)
    app.register_error_handler(503, errors.unavailable)

    return app
