"""Alembic environment for one tenant's database, run inside that tenant's app context.

``python -m dispatcher migrate`` and the dispatcher's "create a new tenant at head" run this
with ``current_app`` set to the tenant's app, so the engine (and its SQLite settings) is the
app's own. Unlike Flask-Migrate's template it does not call ``logging.config.fileConfig``: that
would reconfigure the logging of the whole server process in the middle of serving.
"""

from __future__ import annotations

import logging
from typing import Any

from alembic import context
from flask import current_app

config = context.config
migrate_config = current_app.extensions["migrate"]
db = migrate_config.db
log = logging.getLogger("alembic.env")


def skip_empty_autogenerate(context: object, revision: object, directives: list[Any]) -> None:
    """Write no revision file when ``db migrate`` finds nothing to change."""
    if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
        directives[:] = []
        log.info("No changes in the schema: no revision written.")


def options() -> dict[str, Any]:
    """``Migrate(...)``'s options (``compare_type`` and more), as a copy: the dict is shared
    by every tenant of this package."""
    configured = dict(migrate_config.configure_args)
    configured.setdefault("process_revision_directives", skip_empty_autogenerate)
    # Batch mode: on SQLite, an ALTER that SQLite cannot do becomes copy-and-rename.
    configured.setdefault("render_as_batch", True)
    return configured


def run_migrations_offline() -> None:
    """Emit SQL for ``--sql`` runs, without a connection."""
    url = db.engine.url.render_as_string(hide_password=False)
    context.configure(url=url, target_metadata=db.metadata, literal_binds=True, **options())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the app's own engine."""
    with db.engine.connect() as connection:
        context.configure(connection=connection, target_metadata=db.metadata, **options())
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
