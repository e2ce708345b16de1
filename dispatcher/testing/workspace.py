"""Where each test's tenant lives: a folder, a database and an app, reused and put back.

Kept apart from the fixtures in ``__init__.py`` because this is where the plugin's cost and
cleanup live (docs/testing.md, "Databases, and what isolation costs"). For each (tenant,
``app_config``) the session keeps a :class:`Slot`: an instance folder and a database the
tenant's app was built on, as for a new tenant, and that app. A test leases a slot; when it
ends, the slot is put back as built: the app's config (:mod:`.reuse`), the folder, the
database (SQLite: a copy of the built file; PostgreSQL: :mod:`.postgres`). What cannot be put
back is thrown away and built again: an app a test reshaped or whose test failed, a database
whose schema a test changed. In-memory SQLite and other backends are built per test::

    workspace = Workspace(tenant_set, tmp_path_factory.mktemp("dispatcher"))
    lease = workspace.lease("acme", app_config, request)    # lease.tenant: placed
    app = workspace.app(lease)
    ...; workspace.release(lease, passed=True); workspace.close()   # databases dropped
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from ..build import build_app
from ..database import app_engines, create_new_schema, dispose_engines
from ..tenant import TenantConfig, TenantSet
from .folders import FolderImage
from .postgres import Server, Snapshot
from .reuse import AppState, check_config, copy_config

#: A test's instance root, in its item's stash: shared by the fixtures of that test.
_TEST_ROOT = pytest.StashKey[Path]()


@dataclass(eq=False)
class Slot:
    """A tenant placed on a folder and database of its own, and the app built there."""

    tenant: TenantConfig
    #: The tenant's config as it was: a test that changes a list in ``tenant.config`` (or in
    #: ``app.config``, which holds the same list) must not change the next test's.
    config: dict[str, Any]
    #: The folder as the build left it (SQLite: the database file included).
    image: FolderImage | None = None
    #: SQLite: the database file, relative to the folder (always replaced when put back).
    database: str | None = None
    #: PostgreSQL: an autocommit connection to the slot's database, and what it held.
    control: Any = None
    snapshot: Snapshot | None = None
    app: Flask | None = None
    state: AppState | None = None
    busy: bool = False


@dataclass(eq=False)
class Lease:
    """One test's use of a tenant: its slot (``None``: built for this test alone)."""

    tenant: TenantConfig
    slot: Slot | None
    #: Apps built for this test alone (a ``fresh_app`` test, or no slot): disposed after it.
    own: list[Flask] = field(default_factory=list)
    fresh_app: bool = False


class Workspace:
    """The session's slots, per (tenant, config), and the servers their databases are on."""

    def __init__(self, tenant_set: TenantSet, base: Path) -> None:
        self.tenant_set = tenant_set
        self.base = base
        self.slots: dict[tuple[str, str], list[Slot]] = {}
        self.count = itertools.count()
        self._server: Server | None = None

    def test_root(self, request: pytest.FixtureRequest) -> Path:
        """This test's own folder: the instance root of its ``dispatcher_client``."""
        node: pytest.Item = request.node
        root = node.stash.get(_TEST_ROOT, None)
        if root is None:
            label = re.sub(r"\W", "_", node.name)[:40]
            root = self.base / "tests" / f"{next(self.count)}-{label}"
            root.mkdir(parents=True)
            node.stash[_TEST_ROOT] = root
        return root

    def lease(
        self,
        name: str,
        app_config: dict[str, Any],
        request: pytest.FixtureRequest,
        fresh_app: bool = False,
    ) -> Lease:
        """Tenant ``name`` on a folder and database as a new tenant's, for one test."""
        unplaced = self.tenant_set[name]
        # A copy of every value: a test changing a list in tenant.config must not change the
        # tenants file's (which every later slot of this tenant starts from).
        config = copy_config({**unplaced.config, "TESTING": True, **app_config})
        check_config(dataclasses.replace(unplaced, config=config))
        url = make_url(unplaced.database_uri)
        backend = _backend(url)
        if backend == "postgresql" and self.server is None:
            pytest.skip(
                f"tenant '{name}' uses PostgreSQL and psycopg is not installed: "
                "pip install 'psycopg[binary]' to test it on a throwaway database"
            )
        if backend not in ("sqlite", "postgresql"):
            # In-memory SQLite is new with each app; any other backend cannot be put back,
            # so the app builds its schema on the configured database (docs/testing.md).
            folder = self.test_root(request) / name
            folder.mkdir(mode=0o700)
            placed = dataclasses.replace(unplaced, instance_path=str(folder), config=config)
            return Lease(placed, None)
        key = (name, repr(sorted(config.items())))
        slots = self.slots.setdefault(key, [])
        slot = next((s for s in slots if not s.busy), None)
        if slot is None:
            slot = self.new_slot(dataclasses.replace(unplaced, config=config), url)
            slots.append(slot)
        slot.busy = True
        return Lease(slot.tenant, slot, fresh_app=fresh_app)

    def new_slot(self, unplaced: TenantConfig, url: URL) -> Slot:
        """Build the tenant's app on a new folder and database, as for a new tenant."""
        n = next(self.count)
        folder = self.base / "tenants" / f"{unplaced.name}-{n}"
        slot = Slot(unplaced, config=copy_config(unplaced.config))
        if url.get_backend_name() == "sqlite":
            slot.database = _sqlite_file(url, unplaced)
            url = url.set(database=str(folder / slot.database))
        else:
            assert self.server is not None
            # A database named in the query would win over the throwaway one: never keep it.
            url = url.difference_update_query(("dbname", "database"))
            url = url.set(database=self.server.create(url))
        slot.tenant = dataclasses.replace(
            unplaced, instance_path=str(folder), database_uri=url.render_as_string(False)
        )
        try:
            app = self.build(slot.tenant, create_schema=True)
            dispose_engines(app)  # the files and the database are at rest: copy, snapshot
            if slot.database is None:
                assert self.server is not None and url.database is not None
                slot.control = self.server.connect(url, url.database)
                slot.snapshot = Snapshot.take(slot.control)
            slot.image = FolderImage(folder, self.base / "templates" / f"{unplaced.name}-{n}")
        except BaseException:
            self.discard(slot)
            raise
        slot.app, slot.state = app, AppState(app)
        return slot

    def build(self, tenant: TenantConfig, create_schema: bool = False) -> Flask:
        """The tenant's app, built as the dispatcher builds it: refused (before any schema
        is created) if it could reach another database than the test's (build_app checks
        every engine against ``tenant.database_uri``, the test's throwaway database)."""
        # Its own copy of every value: app.config shares them with what the factory got.
        tenant = dataclasses.replace(tenant, config=copy_config(tenant.config))
        app = build_app(tenant, create_schema=False)
        for engine in app_engines(app):
            if engine.dialect.name == "sqlite":
                event.listen(engine, "connect", _without_fsync)
        if create_schema:  # after build_app, which disposes its engines: an in-memory
            # SQLite database made before that would vanish with its connection
            create_new_schema(app, importlib.import_module(tenant.module))
        app.config["TESTING"] = tenant.config.get("TESTING", True)
        return app

    def app(self, lease: Lease) -> Flask:
        """The lease's app: its slot's, or one built for this test alone."""
        slot = lease.slot
        if slot is None or lease.fresh_app:
            lease.own.append(self.build(lease.tenant, create_schema=slot is None))
            return lease.own[-1]
        if slot.app is None:  # the last one was dropped: build anew on the slot
            slot.app = self.build(slot.tenant)
            slot.state = AppState(slot.app)
        return slot.app

    def release(self, lease: Lease, passed: bool) -> None:
        """The test is over: its slot is put back as built, or thrown away if it cannot."""
        for app in lease.own:
            dispose_engines(app)
        slot = lease.slot
        if slot is None:
            return
        if slot.app is not None:
            dispose_engines(slot.app)  # before the database is replaced or reset
            assert slot.state is not None
            if not (passed and slot.state.restore(slot.app)):
                slot.app = slot.state = None  # a failed test's app is not trusted either
        if dict(slot.tenant.config) != slot.config:
            slot.tenant = dataclasses.replace(slot.tenant, config=copy_config(slot.config))
        try:
            if slot.snapshot is not None:
                slot.snapshot.reset(slot.control)
            assert slot.image is not None
            databases = [slot.database] if slot.database else []
            slot.image.restore(Path(slot.tenant.instance_path), databases)
        except Exception:  # the schema changed, a file cannot be replaced, ...
            self.discard(slot)
        else:
            slot.busy = False

    def discard(self, slot: Slot) -> None:
        """Forget a slot; its database is dropped (a SQLite folder is left, like tmp_path)."""
        for slots in self.slots.values():
            if slot in slots:
                slots.remove(slot)
        if slot.app is not None:
            dispose_engines(slot.app)
        if slot.control is not None:
            slot.control.close()
        url = make_url(slot.tenant.database_uri)
        if self._server is not None and _backend(url) == "postgresql":
            self._server.drop(url)

    @property
    def server(self) -> Server | None:
        """PostgreSQL servers, or ``None`` when psycopg is not installed."""
        if self._server is None:
            try:
                psycopg = importlib.import_module("psycopg")
            except ImportError:
                return None
            self._server = Server(psycopg)
        return self._server

    def close(self) -> None:
        """The session is over: every slot's app disposed, every database dropped."""
        try:
            for slots in self.slots.values():
                for slot in slots:
                    if slot.app is not None:
                        dispose_engines(slot.app)
                    if slot.control is not None:
                        slot.control.close()
        finally:
            if self._server is not None:
                self._server.close()


def _without_fsync(dbapi_connection: Any, connection_record: Any) -> None:
    # A test database need not survive a power cut. Without this, closing the connection of
    # a test that wrote checkpoints the WAL with an fsync: 10-20 ms on this busy disk.
    dbapi_connection.execute("PRAGMA synchronous = OFF")


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
