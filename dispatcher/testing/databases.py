"""Fresh instance folders and databases for every test, copied from templates built once.

Kept apart from the fixtures in ``__init__.py`` because this is where the plugin's cost and
cleanup live: building a tenant's schema once per session (per ``app_config``) and giving each
test a copy costs a file copy, or a ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL, rather than
a ``create_all()`` (docs/testing.md, "Databases, and what isolation costs")::

    workspace = Workspace(tenant_set, tmp_path_factory.mktemp("dispatcher"))
    fresh = workspace.fresh("acme", app_config, workspace.test_root(request))
    ...; workspace.release(fresh); workspace.close()     # PostgreSQL databases dropped
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.engine import URL, make_url

from ..build import build_app
from ..database import app_engines
from ..spec import TenantSet
from ..tenant import TenantConfig

#: A test's instance root, in its item's stash: shared by the fixtures of that test.
_TEST_ROOT = pytest.StashKey[Path]()


@dataclass
class _Template:
    """A tenant's instance folder and database as built once, copied for every test."""

    folder: Path
    #: SQLite: the database file, relative to the folder. PostgreSQL: the template database.
    database: str
    backend: str


class Workspace:
    """Puts tenants on temporary folders and fresh databases, from templates built once."""

    def __init__(self, tenant_set: TenantSet, base: Path) -> None:
        self.tenant_set = tenant_set
        self.base = base
        self.templates: dict[tuple[str, str], _Template] = {}
        self.prepared: set[str] = set()
        self.count = itertools.count()
        self._postgres: Postgres | None = None

    def test_root(self, request: pytest.FixtureRequest) -> Path:
        """This test's instance root (``<root>/<tenant>``), shared by its fixtures."""
        node: pytest.Item = request.node
        root = node.stash.get(_TEST_ROOT, None)
        if root is None:
            label = re.sub(r"\W", "_", node.name)[:40]
            root = self.base / "tests" / f"{next(self.count)}-{label}"
            root.mkdir(parents=True)
            node.stash[_TEST_ROOT] = root
        return root

    def has_schema(self, tenant: TenantConfig) -> bool:
        return tenant.database_uri in self.prepared

    def fresh(self, name: str, app_config: dict[str, Any], root: Path) -> TenantConfig:
        """Tenant ``name`` on ``root/<name>``, its database a copy of its template."""
        unplaced = self.tenant_set[name]
        config = {**unplaced.config, "TESTING": True, **app_config}
        folder = root / name
        url = make_url(unplaced.database_uri)
        backend = _backend(url)
        if backend == "postgresql" and self.postgres is None:
            pytest.skip(
                f"tenant '{name}' uses PostgreSQL and psycopg is not installed: "
                "pip install 'psycopg[binary]' to test it on a throwaway database"
            )
        if backend not in ("sqlite", "postgresql"):
            # In-memory SQLite is fresh per app anyway; any other backend cannot be copied,
            # so the app builds its schema on the configured database (docs/testing.md).
            folder.mkdir(mode=0o700)
            return dataclasses.replace(unplaced, instance_path=str(folder), config=config)
        template = self.template(unplaced, config, url, backend)
        shutil.copytree(template.folder, folder)
        if backend == "sqlite":
            url = url.set(database=str(folder / template.database))
        else:
            assert self.postgres is not None
            url = url.set(database=self.postgres.create(url, template=template.database))
        uri = url.render_as_string(hide_password=False)
        self.prepared.add(uri)
        return dataclasses.replace(
            unplaced, instance_path=str(folder), database_uri=uri, config=config
        )

    def template(
        self, unplaced: TenantConfig, config: dict[str, Any], url: URL, backend: str
    ) -> _Template:
        """Build the tenant's app once for this config, schema and secret key included."""
        key = (unplaced.name, repr(sorted(config.items())))
        if key in self.templates:
            return self.templates[key]
        folder = self.base / "templates" / f"{unplaced.name}-{len(self.templates)}"
        if backend == "sqlite":
            database = _sqlite_file(url, unplaced)
            url = url.set(database=str(folder / database))
        else:
            assert self.postgres is not None
            database = self.postgres.create(url, template=None)
            url = url.set(database=database)
        uri = url.render_as_string(hide_password=False)
        try:
            built = build_app(
                dataclasses.replace(
                    unplaced, instance_path=str(folder), database_uri=uri, config=config
                )
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # the next test tries again from scratch
            raise
        dispose(built)  # a template database must have no open connection to be copied
        self.templates[key] = _Template(folder, database, backend)
        return self.templates[key]

    def release(self, tenant: TenantConfig) -> None:
        """The test is over: its PostgreSQL database goes (folders stay, as tmp_path's do)."""
        url = make_url(tenant.database_uri)
        if self._postgres is not None and _backend(url) == "postgresql":
            self._postgres.release(url)

    @property
    def postgres(self) -> Postgres | None:
        if self._postgres is None:
            try:
                psycopg = importlib.import_module("psycopg")
            except ImportError:
                return None
            self._postgres = Postgres(psycopg)
        return self._postgres

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.close()


class Postgres:
    """Throwaway databases on the tenants' PostgreSQL servers: one per test, copied from a
    template per tenant, none left when the session ends.

    A test's database is dropped when a later one is created, once the server has let go of
    the test's connections: a DROP that finds one waits for it in 100 ms steps. Dropping
    them all at session end instead cost about half a second each on a busy server, and
    holds their disk meanwhile (docs/benchmarks.md).
    """

    def __init__(self, psycopg: Any) -> None:
        self.psycopg = psycopg
        self.prefix = f"dispatcher_test_{secrets.token_hex(4)}"
        self.count = itertools.count()
        self.connections: dict[tuple[Any, ...], Any] = {}
        self.templates: list[URL] = []
        self.finished: list[URL] = []

    def connect(self, url: URL) -> Any:
        """An autocommit connection to the server's ``postgres`` database (CREATE DATABASE
        cannot run in a transaction), one per server."""
        key = (url.host, url.port, url.username, url.password, tuple(url.query.items()))
        if key not in self.connections:
            options = {k: v for k, v in url.query.items() if isinstance(v, str)}
            self.connections[key] = self.psycopg.connect(
                host=url.host,
                port=url.port,
                user=url.username,
                password=url.password,
                dbname="postgres",
                autocommit=True,
                **options,
            )
        return self.connections[key]

    def create(self, url: URL, template: str | None) -> str:
        """Create a database on ``url``'s server, a copy of ``template`` if given."""
        self.drop_finished()
        name = f"{self.prefix}_{next(self.count)}"
        sql = self.psycopg.sql
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is None:
            self.templates.append(url.set(database=name))
        else:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self.connect(url).execute(statement)
        return name

    def release(self, url: URL) -> None:
        """The test using ``url``'s database is over: drop it before the next is created."""
        if url.database is not None and url.database.startswith(self.prefix):
            self.finished.append(url)  # never a database this session did not create

    def drop_finished(self, wait: bool = False) -> None:
        """Drop the finished tests' databases that no backend still uses (all, with ``wait``)."""
        if not self.finished:
            return
        busy: set[str] = set()
        if not wait:
            names = [url.database for url in self.finished]
            rows = self.connect(self.finished[0]).execute(
                "SELECT DISTINCT datname FROM pg_stat_activity WHERE datname = ANY(%s)", [names]
            )
            busy = {row[0] for row in rows}
        for url in [u for u in self.finished if u.database not in busy]:
            self.drop(url)
            self.finished.remove(url)

    def drop(self, url: URL) -> None:
        """Drop ``url``'s database, closing any connection a test left open to it."""
        sql = self.psycopg.sql
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        self.connect(url).execute(statement.format(sql.Identifier(url.database)))

    def close(self) -> None:
        """Drop what is left, templates included, and close the connections."""
        try:
            self.drop_finished(wait=True)
            for url in self.templates:
                self.drop(url)
        finally:
            for connection in self.connections.values():
                connection.close()


def dispose(flask_app: Flask) -> None:
    """Close the app's pooled connections now, not at some later garbage collection."""
    for engine in app_engines(flask_app):
        engine.dispose()


def _backend(url: URL) -> str:
    """``sqlite`` (a file), ``postgresql``, or the backend of a database built per test."""
    backend = url.get_backend_name()
    if backend == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    ):
        return "sqlite-memory"
    return backend


def _sqlite_file(url: URL, unplaced: TenantConfig) -> str:
    """The database file's path inside the instance folder. A file outside it (an absolute
    path in tenants.yaml) is redirected into it by name: a test never touches it."""
    database = os.path.normpath(url.database or "")
    inside = os.path.relpath(database, unplaced.instance_path)
    outside = inside == os.pardir or inside.startswith(os.pardir + os.sep)
    return os.path.basename(database) if outside else inside
