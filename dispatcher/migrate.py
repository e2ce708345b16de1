"""Schema migrations, tenant by tenant, for apps that use Flask-Migrate.

Convention: an app package that uses Flask-Migrate keeps its Alembic folder in
``<package>/migrations/`` and passes it to ``Migrate.init_app(app, db, directory=...)``; the
dispatcher finds it in ``app.extensions["migrate"]``. A new tenant's database is created at
head when it is built (:mod:`dispatcher.database`); ``python -m dispatcher migrate`` upgrades
existing ones (:func:`migrate_tenants`), one process per ``--jobs``: Alembic's ``context`` is
global to a process, so two migrations cannot run in threads at once::

    for result in migrate_tenants(tenant_set, ["acme"], jobs=4):
        print(result)        # acme  1a2b3c -> 4d5e6f  0.08 s  ok
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from .build import build_app
from .database import app_engines, migrations_folder, upgrade_to_head
from .holds import held
from .logs import current_tenant
from .spec import TenantSet
from .tenant import TenantConfig


@dataclass(frozen=True)
class Result:
    """What happened to one tenant's schema."""

    name: str
    before: str | None = None
    after: str | None = None
    seconds: float = 0.0
    status: str = "ok"  # ok, up to date, would upgrade, no migrations, failed
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def __str__(self) -> str:
        if self.failed:
            moved = f"{self.before or '?'} -> ?"
        else:
            moved = f"{self.before or '(empty)'} -> {self.after or '(empty)'}"
        tail = f": {self.error}" if self.error else ""
        return f"{self.name}  {moved}  {self.seconds:.2f} s  {self.status}{tail}"


@lru_cache(maxsize=64)
def head_revision(folder: str) -> str | None:
    """The newest revision in a migrations folder (read once per process)."""
    return ScriptDirectory.from_config(_alembic_config(folder)).get_current_head()


def database_revision(database_uri: str) -> str:
    """A database's schema revision, read without building its app: for ``list``.

    ``-`` when it has no migrations table, ``(new)`` for a SQLite file not created
    yet (it is not created here), ``(unreachable)`` when it cannot be opened.
    """
    url = make_url(database_uri)
    if url.get_backend_name() == "sqlite" and url.database and not os.path.exists(url.database):
        return "(new)"
    try:
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
        engine.dispose()
    except Exception:  # no driver, no server, no permission: the table says so, on one line
        return "(unreachable)"
    return revision or "-"


def current_revision(app: Flask) -> str | None:
    """The revision the tenant's database is at (``None`` for a new database)."""
    engine = app_engines(app)[0]
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _alembic_config(folder: str) -> Config:
    config = Config(os.path.join(folder, "alembic.ini"))
    config.set_main_option("script_location", folder)
    return config


def migrate_tenant(tenant_set: TenantSet, tenant: TenantConfig, dry_run: bool = False) -> Result:
    """Upgrade one tenant's database to head; never raises, the result says what happened."""
    started = time.perf_counter()
    token = current_tenant.set(tenant.name)
    before = None
    try:
        app = build_app(tenant, create_schema=False)
        folder = migrations_folder(app)
        if folder is None:
            return Result(tenant.name, status="no migrations")
        before, head = current_revision(app), head_revision(folder)
        if before == head:
            status = "up to date"
        elif dry_run:
            status = "would upgrade"
        else:
            with held(tenant_set, tenant.name, "migrating"):
                upgrade_to_head(app)
            status = "ok"
        after = {"ok": current_revision(app), "would upgrade": head}.get(status, before)
        for engine in app_engines(app):
            engine.dispose()
        return Result(tenant.name, before, after, time.perf_counter() - started, status)
    except Exception as e:
        elapsed = time.perf_counter() - started
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return Result(tenant.name, before, None, elapsed, "failed", reason)
    finally:
        current_tenant.reset(token)


def migrate_tenants(
    tenant_set: TenantSet, names: Sequence[str], jobs: int = 1, dry_run: bool = False
) -> Iterator[Result]:
    """Migrate the named tenants, ``jobs`` at a time; results come as each tenant finishes."""
    if jobs <= 1 or len(names) <= 1:
        for name in names:
            yield migrate_tenant(tenant_set, tenant_set[name], dry_run)
        return
    # Forked workers inherit the tenant set as it is (no pickling, no second load).
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_set_worker_tenants, initargs=(tenant_set,)
    ) as pool:
        yield from pool.map(_migrate_in_worker, names, [dry_run] * len(names), chunksize=8)


#: In a ``--jobs`` worker process only: the tenant set it migrates from.
_worker_set: TenantSet | None = None


def _set_worker_tenants(tenant_set: TenantSet) -> None:
    global _worker_set
    _worker_set = tenant_set


def _migrate_in_worker(name: str, dry_run: bool) -> Result:
    assert _worker_set is not None
    return migrate_tenant(_worker_set, _worker_set[name], dry_run)
