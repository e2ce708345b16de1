"""Alembic environment for one tenant's database, run inside that tenant's app context.

``python -m dispatcher migrate`` and the dispatcher's "create a new tenant at head" run this
with ``current_app`` set to the tenant's app, so the engine (and its SQLite settings) is the
app's own. Unlike Flask-Migrate's template it does not call ``logging.config.fileConfig``: that
would reconfigure the logging of the whole server process in the middle of serving.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from flask import current_app

config = context.config
db = current_app.extensions["migrate"].db


def run_migrations_offline() -> None:
    """Emit SQL for ``--sql`` runs, without a connection."""
    url = db.engine.url.render_as_string(hide_password=False)
    context.configure(url=url, target_metadata=db.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the app's own engine; batch mode lets SQLite alter tables."""

    def skip_empty_autogenerate(context: object, revision: object, directives: list[Any]) -> None:
        if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []

    options = dict(current_app.extensions["migrate"].configure_args)
    options.setdefault("process_revision_directives", skip_empty_autogenerate)
    options.setdefault("render_as_batch", True)
    with db.engine.connect() as connection:
        context.configure(connection=connection, target_metadata=db.metadata, **options)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
