"""Schema migrations, tenant by tenant, for apps that use Flask-Migrate.

Convention (DESIGN 6): an app package that uses Flask-Migrate keeps its Alembic folder in
``<package>/migrations/`` and passes it to ``Migrate.init_app(app, db, directory=...)``; the
dispatcher finds it in ``app.extensions["migrate"]``. A new tenant's database is created at
head when it is built (:mod:`dispatcher.database`); ``python -m dispatcher migrate`` upgrades
existing ones (:func:`migrate_tenants`), one process per ``--jobs``: Alembic's ``context`` is
global to a process, so two migrations cannot run in threads at once.

A tenant already at head is found so without building its app (a factory costs milliseconds,
times thousands of tenants): the folder is found by the convention without importing tenant
code, its head read once, the database's revision read over a plain connection. Only a tenant
that is behind, new, unreadable, or whose package has no ``migrations/`` is built::

    for result in migrate_tenants(tenant_set, ["acme"], jobs=4):
        print(result)        # acme  1a2b3c -> 4d5e6f  0.08 s  ok
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from .build import built_app
from .database import app_engines, migrations_folder, upgrade_to_head
from .holds import held
from .rules import absolute_sqlite, find_spec_without_import
from .tenant import TenantConfig, TenantSet


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
        revision = read_revision(url)
    except Exception:  # no driver, no server, no permission: the table says so, on one line
        return "(unreachable)"
    return revision or "-"


def read_revision(url: URL) -> str | None:
    """The revision in a database's ``alembic_version`` table (``None``: no table, or empty).

    Raises whatever the driver raises when the database cannot be read; a SQLite file is
    opened read-only, never created. SQLite is read with :mod:`sqlite3` itself: through an
    SQLAlchemy engine and Alembic it costs about 1.5 ms more per tenant (0.2 ms against 1.6).
    """
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return _sqlite_revision(url.database or "")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _sqlite_revision(path: str) -> str | None:
    path = os.path.realpath(path)  # SQLite keeps the -wal beside the file a link points to
    options = "mode=ro&immutable=1" if _closed_wal_database(path) else "mode=ro"
    uri = f"file:{urllib.parse.quote(path)}?{options}"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        try:
            rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.OperationalError as e:  # one query, not a look at sqlite_master first
            if str(e).startswith("no such table"):
                return None
            raise
    if len(rows) > 1:  # as Alembic's own reading does: several heads are no one revision
        raise RuntimeError("alembic_version has several rows (branches); upgrade by building")
    return rows[0][0] if rows else None


def _closed_wal_database(path: str) -> bool:
    """A WAL-mode SQLite file that no connection has open: all of it is in the file itself.

    Opened as it is, even read-only, such a file gets a ``-wal`` and a 32 KiB ``-shm`` beside
    it, left there after: 1.3 ms per tenant, and 3 GiB of files for ``migrate --all`` over
    100,000 tenants of a stopped node (or lazy ones never built). The last connection to
    close checkpoints the ``-wal`` into the file and removes it, so with no ``-wal`` the file
    is complete and can be read ``immutable`` (no locks, no ``-shm``). A writer that opens it
    meanwhile commits to a new ``-wal``; the file changes only if that is checkpointed while
    the two pages are read, and then they read the revision before or after, or fail (and
    the tenant is built). Rollback-journal files are never read so: writers change them in
    place.
    """
    if os.path.exists(path + "-wal"):
        return False
    try:
        with open(path, "rb") as file:
            header = file.read(20)
    except OSError:
        return False
    return header[:16] == b"SQLite format 3\0" and header[18:20] == b"\x02\x02"


@lru_cache(maxsize=256)
def conventional_folder(module: str) -> str | None:
    """``<package>/migrations`` of an app module, found without importing it; ``None`` when
    that folder has no Alembic ``env.py``.

    The package is the module itself if it is one (``tenants.notes``), else the one holding
    it (``shop.admin`` -> ``shop/``).
    """
    spec = find_spec_without_import(module)
    if spec is None or spec.origin is None:
        return None
    locations = spec.submodule_search_locations
    package = next(iter(locations)) if locations else os.path.dirname(spec.origin)
    folder = os.path.join(package, "migrations")
    return folder if os.path.isfile(os.path.join(folder, "env.py")) else None


def _at_head_unbuilt(tenant: TenantConfig) -> tuple[str, str] | None:
    """``(revision, folder)`` if the tenant's database is at its conventional folder's head,
    found without building the app; ``None`` whenever that cannot be told this way."""
    folder = conventional_folder(tenant.module)
    if folder is None:
        return None
    url = absolute_sqlite(make_url(tenant.database_uri), tenant.instance_path)
    if url.get_backend_name() == "sqlite" and url.query:
        return None  # URI options (mode=memory, ...): let the app open it as it would
    try:
        revision = read_revision(url)
        head = head_revision(folder)
    except Exception:  # new, unreadable, no table: building tells what is wrong, or fixes it
        return None
    return (revision, folder) if revision is not None and revision == head else None


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
    at_head = _at_head_unbuilt(tenant)
    if at_head is not None:
        seconds = time.perf_counter() - started
        return Result(tenant.name, at_head[0], at_head[0], seconds, "up to date")
    return _migrate_built(tenant_set, tenant, dry_run, started)


def _migrate_built(
    tenant_set: TenantSet, tenant: TenantConfig, dry_run: bool, started: float
) -> Result:
    """The tenant's app built, its own migrations folder asked, and upgraded if behind."""
    before = None
    try:
        with built_app(tenant, create_schema=False) as app:
            folder = migrations_folder(app)
            if folder is None:
                return Result(tenant.name, status="no migrations")
            before, head = current_revision(app), head_revision(folder)
            after = before
            if before == head:
                status = "up to date"
            elif dry_run:
                status, after = "would upgrade", head
            else:
                with held(tenant_set, tenant.name, "migrating"):
                    # Read again under the hold: another node's migrate may have held the
                    # tenant first (it waited for that one) and upgraded it meanwhile.
                    before = current_revision(app)
                    if before != head:
                        upgrade_to_head(app)
                after = current_revision(app)
                status = "ok" if after != before else "up to date"
        return Result(tenant.name, before, after, time.perf_counter() - started, status)
    except Exception as e:
        elapsed = time.perf_counter() - started
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return Result(tenant.name, before, None, elapsed, "failed", reason)


def migrate_tenants(
    tenant_set: TenantSet, names: Sequence[str], jobs: int = 1, dry_run: bool = False
) -> Iterator[Result]:
    """Migrate the named tenants, ``jobs`` at a time; results come as each tenant finishes.

    With ``jobs``, the tenants already at head are told here first (that is cheap); only the
    others go to the worker processes, and none is started when there are none.
    """
    if jobs <= 1 or len(names) <= 1:
        for name in names:
            yield migrate_tenant(tenant_set, tenant_set[name], dry_run)
        return
    behind = []
    for name in names:
        started = time.perf_counter()
        at_head = _at_head_unbuilt(tenant_set[name])
        if at_head is None:
            behind.append(name)
        else:
            seconds = time.perf_counter() - started
            yield Result(name, at_head[0], at_head[0], seconds, "up to date")
    if not behind:
        return
    # Forked workers inherit the tenant set as it is (no pickling, no second load).
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        min(jobs, len(behind)),
        mp_context=context,
        initializer=_set_worker_tenants,
        initargs=(tenant_set,),
    ) as pool:
        yield from pool.map(_built_in_worker, behind, [dry_run] * len(behind), chunksize=8)


#: In a ``--jobs`` worker process only: the tenant set it migrates from.
_worker_set: TenantSet | None = None


def _set_worker_tenants(tenant_set: TenantSet) -> None:
    global _worker_set
    _worker_set = tenant_set


def _built_in_worker(name: str, dry_run: bool) -> Result:
    assert _worker_set is not None
    return _migrate_built(_worker_set, _worker_set[name], dry_run, time.perf_counter())
