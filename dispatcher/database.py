"""What the dispatcher does with a tenant app's database: find its engines, create its schema.

A new tenant's database gets its schema when the app is built: at head through the app's
migrations if it uses Flask-Migrate (the package keeps them in ``<package>/migrations/``),
otherwise with the package's ``init_db(app)`` or Flask-SQLAlchemy's ``create_all()``::

    create_new_schema(app, importlib.import_module("tenants.notes"))
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app
from flask.typing import ResponseReturnValue
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import NullPool
from werkzeug.exceptions import ServiceUnavailable


def app_engines(app: Flask) -> list[Engine]:
    """The SQLAlchemy engines of an app that uses Flask-SQLAlchemy (else none)."""
    db = app.extensions.get("sqlalchemy")
    if db is None:
        return []
    with app.app_context():
        return list(db.engines.values())


def dispose_engines(app: Flask) -> None:
    """Close every pooled connection of the app's engines now, not at a later collection."""
    for engine in app_engines(app):
        engine.dispose()


def migrations_folder(app: Flask) -> str | None:
    """The app's Alembic folder if it uses Flask-Migrate, else ``None``."""
    config = app.extensions.get("migrate")
    return str(config.directory) if config is not None else None


def upgrade_to_head(app: Flask) -> None:
    """Run the app's migrations up to head (``flask db upgrade``) on its database."""
    import flask_migrate

    with app.app_context():
        try:
            flask_migrate.upgrade(directory=migrations_folder(app))
        except SystemExit:  # Flask-Migrate turns Alembic errors into exit(1), after logging them
            raise RuntimeError("the migration failed; its error is logged above") from None


def create_new_schema(app: Flask, module: Any) -> None:
    """Create the tables of a new tenant's database; an existing one is left as it is.

    With migrations, a database without tables is brought to head (and one with tables is
    left to ``python -m dispatcher migrate``). Otherwise the package's own ``init_db(app)``
    runs when the database has no tables yet, or Flask-SQLAlchemy's ``create_all()`` creates
    whatever tables are missing.

    Call it with the instance folder's build lock held (:func:`dispatcher.build.build_app`
    does): workers booting together then create the schema once.
    """
    db = app.extensions.get("sqlalchemy")
    init_db = getattr(module, "init_db", None)
    with app.app_context():
        if db is not None and migrations_folder(app) is not None:
            if not inspect(db.engine).get_table_names():
                upgrade_to_head(app)
        elif callable(init_db):
            if db is None or not inspect(db.engine).get_table_names():
                init_db(app)
        elif db is not None:
            db.create_all()


_EXISTS = text("SELECT 1 FROM pg_database WHERE datname = :name")


def ensure_database(url: str) -> bool:
    """Create a PostgreSQL tenant's database if it does not exist; ``True`` if created.

    Connects to the server's ``postgres`` database with the tenant's own credentials, so the
    role needs ``CREATEDB``. Other backends create their database themselves (SQLite) or are
    left to the operator.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.database:
        return False
    server = create_engine(
        parsed.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with server.connect() as connection:
            exists = connection.execute(_EXISTS, {"name": parsed.database}).first()
            if exists:
                return False
            quoted = server.dialect.identifier_preparer.quote(parsed.database)
            try:
                connection.exec_driver_sql(f"CREATE DATABASE {quoted}")
            except DBAPIError:  # another node or worker created it a moment ago: fine
                if not connection.execute(_EXISTS, {"name": parsed.database}).first():
                    raise
                return False
            return True
    finally:
        server.dispose()


def answer_503_when_database_fails(app: Flask) -> None:
    """A tenant whose database is unreachable answers 503 (logged), not its 500 page.

    Connections are checked before use (``pool_pre_ping``), so once the database is back the
    next request reconnects: the tenant recovers without a restart.
    """
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(PoolTimeoutError, _database_unavailable)


def _database_unavailable(error: Exception) -> ResponseReturnValue:
    current_app.logger.error("database unavailable, answering 503: %s", error, exc_info=error)
    # Through the app's own handlers, so a JSON API answers its 503 in JSON.
    return current_app.handle_http_exception(ServiceUnavailable(retry_after=30))
