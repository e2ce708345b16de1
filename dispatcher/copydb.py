"""Copy one tenant's database to another server: how a tenant moves from SQLite to PostgreSQL.

``python -m dispatcher copy-db acme --to postgresql://app@db/tenant_acme`` holds the tenant in
maintenance (503 on every worker), creates the target database and its schema the way a new
tenant's is created (migrations to head, or ``create_all()``), copies every table's rows in
dependency order, verifies the counts, and releases the tenant. The file still points at the
old database: the operator switches ``database:`` afterwards (docs/scaling.md)::

    for table, rows in copy_database(tenant_set, tenant_set["acme"], target):
        print(table, rows)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from flask import Flask
from sqlalchemy import Table, func, inspect, select, text
from sqlalchemy.engine import Connection, Engine

from . import rules
from .build import built_app
from .database import app_engines
from .errors import CopyError
from .holds import held
from .tenant import TenantConfig, TenantSet

BATCH = 1000


def copy_database(
    tenant_set: TenantSet, tenant: TenantConfig, target_url: str
) -> list[tuple[str, int]]:
    """Copy ``tenant``'s tables and rows to ``target_url``; return (table, rows) verified."""
    url = rules.parse_database_url(target_url)
    if url is None:
        raise CopyError(f"'{target_url}' is not a database URL")
    target_uri = rules.with_default_driver(url).render_as_string(hide_password=False)
    target = dataclasses.replace(tenant, database_uri=target_uri)
    with (
        built_app(tenant, create_schema=False) as source_app,
        built_app(target, create_database=True) as target_app,  # a new tenant's schema
    ):
        tables = _tables(source_app)
        source, destination = _engine(source_app), _engine(target_app)
        with held(tenant_set, tenant.name, "copying"):
            with source.connect() as read, destination.begin() as write:
                _check_empty(write, tables)
                copied = [(table.name, _copy_table(read, write, table)) for table in tables]
                _reset_sequences(write, tables)
            return _verify(source, destination, copied, tables)


def _tables(app: Flask) -> list[Table]:
    db = app.extensions.get("sqlalchemy")
    if db is None:
        raise CopyError("copy-db needs an app that uses Flask-SQLAlchemy (it reads its tables)")
    return [t for t in db.metadata.sorted_tables if t.name != "alembic_version"]


def _engine(app: Flask) -> Engine:
    engines = app_engines(app)
    if not engines:
        raise CopyError("the app has no database engine")
    return engines[0]


def _check_empty(write: Connection, tables: list[Table]) -> None:
    for table in tables:
        if write.execute(select(func.count()).select_from(table)).scalar_one():
            raise CopyError(
                f"the target's table '{table.name}' already has rows; copy into a new database"
            )


def _copy_table(read: Connection, write: Connection, table: Table) -> int:
    count = 0
    for batch in _batches(read, table):
        write.execute(table.insert(), batch)
        count += len(batch)
    return count


def _batches(read: Connection, table: Table) -> Iterator[list[dict[str, object]]]:
    result = read.execution_options(stream_results=True).execute(select(table))
    while rows := result.fetchmany(BATCH):
        yield [dict(row._mapping) for row in rows]


def _reset_sequences(write: Connection, tables: list[Table]) -> None:
    """Rows came with their ids: move PostgreSQL's id sequences past them."""
    if write.dialect.name != "postgresql":
        return
    for table in tables:
        for column in table.primary_key.columns:
            if column.autoincrement is not False and column.type.python_type is int:
                write.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence(:table, :column), "
                        f'COALESCE((SELECT MAX("{column.name}") FROM "{table.name}"), 0) + 1, '
                        "false)"
                    ),
                    {"table": table.name, "column": column.name},
                )


def _verify(
    source: Engine, destination: Engine, copied: list[tuple[str, int]], tables: list[Table]
) -> list[tuple[str, int]]:
    by_name = {t.name: t for t in tables}
    with source.connect() as a, destination.connect() as b:
        for name, rows in copied:
            table = by_name[name]
            counts = [
                c.execute(select(func.count()).select_from(table)).scalar_one() for c in (a, b)
            ]
            if counts != [rows, rows]:
                raise CopyError(
                    f"table '{name}': {counts[0]} rows in the source, {counts[1]} copied"
                )
    missing = set(by_name) - set(inspect(destination).get_table_names())
    if missing:
        raise CopyError(f"tables missing in the target: {', '.join(sorted(missing))}")
    return copied
