"""The notes app's extensions, created unbound so that one object serves every tenant.

Several tenants can run this package in one process. Flask-SQLAlchemy keeps an engine per app
and scopes sessions to the app context, so the single ``db`` below is safe to share;
:func:`tenants.notes.create_app` binds each tenant's app with ``init_app``. Nothing here holds
an app::

    from tenants.notes.extensions import db
    notes = db.session.scalars(select(Note)).all()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """SQLAlchemy 2.0 declarative base; Flask-SQLAlchemy builds ``db.Model`` from it."""


db = SQLAlchemy(model_class=Base)

#: Schema migrations, kept in ``tenants/notes/migrations`` (``python -m dispatcher migrate``).
migrate = Migrate()

#: Refuses (400) every POST, PUT, PATCH and DELETE without a valid token, app-wide.
csrf = CSRFProtect()

# ``db.Model`` is a class Flask-SQLAlchemy builds at run time from ``Base``; mypy cannot use a
# variable as a base class, so models subclass ``Model``, which type-checks as ``Base``.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
