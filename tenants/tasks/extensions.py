"""The tasks app's extensions, created unbound so that one object serves every tenant.

Several tenants can run this package in one process. Flask-SQLAlchemy keeps an engine per app
and scopes sessions to the app context, so the single ``db`` below is safe to share;
:func:`tenants.tasks.create_app` binds each tenant's app with ``init_app``. Nothing here holds
an app::

    from tenants.tasks.extensions import db
    tasks = db.session.scalars(select(Task)).all()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """SQLAlchemy 2.0 declarative base; Flask-SQLAlchemy builds ``db.Model`` from it."""

    # Every constraint gets a predictable name: Alembic can only drop or alter a named one, and
    # on SQLite (batch mode) it finds constraints again by these names.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


db = SQLAlchemy(model_class=Base)

#: Schema migrations, kept in ``tenants/tasks/migrations`` (``python -m dispatcher migrate``).
migrate = Migrate()

# ``db.Model`` is a class Flask-SQLAlchemy builds at run time from ``Base``; mypy cannot use a
# variable as a base class, so models subclass ``Model``, which type-checks as ``Base``.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
