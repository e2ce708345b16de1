"""A pytest plugin that runs an app's integration tests once per tenant (DESIGN section 7).

Enable it in the root ``conftest.py`` (or with ``-p dispatcher.testing``) and write ordinary
Flask tests; every test that takes ``tenant``, ``app``, ``client`` or ``runner`` runs once per
enabled tenant of ``tenants.yaml``, the tenant's name in its id, on a temporary instance folder
and database (never the real ``instance/``)::

    pytest_plugins = ["dispatcher.testing"]

    def test_home(client):                  # test_home[acme], test_home[globex], ...
        assert client.get("/").status_code == 200

Each tenant's schema is built once per session into a template (a SQLite file, or a
PostgreSQL database copied with ``CREATE DATABASE ... TEMPLATE``); a test gets a copy, so a
fresh database costs a file copy rather than a ``create_all()``. docs/testing.md has the rest:
selecting tenants (``--tenant``, the ``tenants``/``tenant_app`` markers), ``app_config``, CI.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import itertools
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy.engine import URL, make_url
from werkzeug.test import Client

from .build import build_app
from .database import app_engines, create_new_schema
from .problems import ConfigError
from .routing import Dispatcher
from .spec import TenantSet, load_tenants
from .tenant import TenantConfig

#: Tenants are loaded onto this root and moved onto temporary folders test by test, so that
#: nothing can ever be created in the real instance/ (it is never created here either).
_UNPLACED_ROOT = os.path.join(os.sep, "dispatcher-testing-unplaced")
#: What ``tenant`` is parametrized with when markers and ``--tenant`` leave a test no tenant:
#: such items are deselected before the run.
_UNSELECTED = object()
_MARKERS = {
    "tenants": "tenants(*names): run this test only for the named tenants (dispatcher.testing)",
    "tenant_app": "tenant_app(*import_paths): run this test only for the tenants whose app is "
    "one of these ('package.module' or 'package.module:factory') (dispatcher.testing)",
}


# -- hooks --------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dispatcher", "multi-tenant dispatcher (dispatcher.testing)")
    group.addoption(
        "--tenants-file",
        dest="dispatcher_tenants_file",
        metavar="PATH",
        help="The tenants file to test against. Default: $TENANTS_FILE, else tenants.yaml in "
        "the rootdir. A relative path is relative to the current directory.",
    )
    group.addoption(
        "--tenant",
        dest="dispatcher_tenants",
        action="append",
        default=[],
        metavar="NAME",
        help="Run per-tenant tests for this tenant only; repeat for several.",
    )


def pytest_configure(config: pytest.Config) -> None:
    for line in _MARKERS.values():
        config.addinivalue_line("markers", line)
    config.stash[_STATE] = _State(config)


def pytest_report_header(config: pytest.Config) -> str:
    selected = config.getoption("dispatcher_tenants")
    only = f" (--tenant {', '.join(selected)})" if selected else ""
    return f"dispatcher: tenants file {_tenants_file(config)}{only}"


@pytest.hookimpl(tryfirst=True)  # first, so the tenant leads the id: test_x[acme-GET]
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    uses_tenant = "tenant" in metafunc.fixturenames and not _parametrized_by_test(metafunc)
    if not uses_tenant and "dispatcher_client" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[_STATE]
    tenant_set = state.load()
    if tenant_set is None or not uses_tenant:
        return
    names = state.select(metafunc.definition, tenant_set)
    if names:
        metafunc.parametrize("tenant", names, indirect=True, ids=names)
    else:
        metafunc.parametrize("tenant", [_UNSELECTED], indirect=True, ids=["unselected"])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Raised here, after collection, rather than where found: an exception during collection
    # becomes a collection error with a traceback, not a usage error.
    errors = config.stash[_STATE].errors
    if errors:
        raise pytest.UsageError("\n".join(errors))
    unselected = [item for item in items if _tenant_param(item) is _UNSELECTED]
    if unselected:
        config.hook.pytest_deselected(items=unselected)
        items[:] = [item for item in items if _tenant_param(item) is not _UNSELECTED]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def app_config() -> dict[str, Any]:
    """Extra Flask config for every app this test builds: override it to test a setting."""
    return {}


@pytest.fixture
def tenant(
    request: pytest.FixtureRequest, app_config: dict[str, Any], _dispatcher_tenants: _Workspace
) -> Iterator[TenantConfig]:
    """The tenant this test runs for, on a fresh temporary instance folder and database."""
    name = getattr(request, "param", None)
    if name is _UNSELECTED:
        pytest.skip("no tenant selected")
    if not isinstance(name, str):
        pytest.fail(
            "the 'tenant' fixture is parametrized when tests are collected: take it (or app, "
            "client, runner) as a test argument rather than with request.getfixturevalue()",
            pytrace=False,
        )
    fresh = _dispatcher_tenants.fresh(name, app_config, _dispatcher_tenants.test_root(request))
    yield fresh
    _dispatcher_tenants.release(fresh)


@pytest.fixture
def app(tenant: TenantConfig, _dispatcher_tenants: _Workspace) -> Iterator[Flask]:
    """The tenant's Flask app, built and isolated as the dispatcher builds it, TESTING on."""
    flask_app = build_app(tenant, create_schema=False)
    if not _dispatcher_tenants.has_schema(tenant):
        # Created after build_app, which disposes its engines once the schema exists: an
        # in-memory SQLite database would vanish with its connection.
        create_new_schema(flask_app, importlib.import_module(tenant.module))
    flask_app.config["TESTING"] = tenant.config.get("TESTING", True)
    yield flask_app
    _dispose(flask_app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the tenant's app (paths are relative to the tenant's mount)."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A runner for the tenant's Flask CLI commands."""
    return app.test_cli_runner()


@pytest.fixture
def dispatcher_client(
    request: pytest.FixtureRequest, app_config: dict[str, Any], _dispatcher_tenants: _Workspace
) -> Iterator[Client]:
    """A test client of the whole dispatcher: every enabled tenant, on temporary folders."""
    workspace = _dispatcher_tenants
    # In a per-tenant test, that tenant is the test's own (same folder and database as `app`).
    own = request.getfixturevalue("tenant") if "tenant" in request.fixturenames else None
    root = workspace.test_root(request)
    placed: list[TenantConfig] = []
    tenants = []
    for unplaced in workspace.tenant_set.tenants:
        if own is not None and unplaced.name == own.name:
            tenants.append(own)
        elif unplaced.enabled and unplaced.maintenance is None:
            placed.append(workspace.fresh(unplaced.name, app_config, root))
            tenants.append(placed[-1])
        else:  # never built: moved off the real instance/ all the same
            tenants.append(dataclasses.replace(unplaced, instance_path=str(root / unplaced.name)))
    tenant_set = dataclasses.replace(
        workspace.tenant_set, tenants=tuple(tenants), instance_root=str(root)
    )
    # Not watching the tenants file: an edit during the run must not reload the real folders.
    dispatcher = Dispatcher(tenant_set, watch=False)
    yield Client(dispatcher)
    for handle in dispatcher.tenants.values():
        if handle.app is not None:
            _dispose(handle.app)
    for fresh in placed:
        workspace.release(fresh)


@pytest.fixture(scope="session")
def _dispatcher_tenants(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Workspace]:
    """The session's tenants file, templates and temporary folders (private)."""
    tenant_set = pytestconfig.stash[_STATE].load()
    if tenant_set is None:  # first needed here, past collection: the test errors, not the run
        pytest.fail("\n".join(pytestconfig.stash[_STATE].errors), pytrace=False)
    workspace = _Workspace(tenant_set, tmp_path_factory.mktemp("dispatcher"))
    yield workspace
    workspace.close()


# -- selection ----------------------------------------------------------------------------------


class _State:
    """The session's tenants file, loaded at most once, and the usage errors found so far."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.loaded = False
        self.tenant_set: TenantSet | None = None
        self.errors: list[str] = []

    def error(self, message: str) -> None:
        if message not in self.errors:
            self.errors.append(message)

    def load(self) -> TenantSet | None:
        """The tenants file on unplaced folders; ``None`` (and an error) if unusable."""
        if self.loaded:
            return self.tenant_set
        self.loaded = True
        path = _tenants_file(self.config)
        if not path.is_file():
            self.error(
                f"dispatcher.testing: tenants file {path} not found. Pass --tenants-file PATH "
                "or set $TENANTS_FILE"
            )
            return None
        try:
            self.tenant_set = load_tenants(path, instance_root=_UNPLACED_ROOT)
        except ConfigError as e:
            self.error(f"dispatcher.testing: {path} cannot be used:\n{e}")
            return None
        for name in self.config.getoption("dispatcher_tenants"):
            problem = _unknown_tenant(name, self.tenant_set)
            if problem:
                self.error(f"dispatcher.testing: --tenant {name}: {problem}")
        return self.tenant_set

    def select(self, definition: pytest.Function, tenant_set: TenantSet) -> list[str]:
        """The enabled tenants this test runs for, after ``--tenant`` and its markers."""
        only = self.config.getoption("dispatcher_tenants")
        chosen = [t for t in tenant_set.enabled if not only or t.name in only]
        names = self.marker_args(definition, "tenants")
        if names is not None:
            for name in names:
                problem = _unknown_tenant(name, tenant_set, disabled_ok=True)
                if problem:
                    self.error(f"{definition.nodeid}: @pytest.mark.tenants: {problem}")
            chosen = [t for t in chosen if t.name in names]
        paths = self.marker_args(definition, "tenant_app")
        if paths is not None:
            for path in paths:
                problem = _unknown_app(path)
                if problem:
                    self.error(f"{definition.nodeid}: @pytest.mark.tenant_app: {problem}")
            chosen = [t for t in chosen if any(_runs(t, path) for path in paths)]
        return [t.name for t in chosen]

    def marker_args(self, definition: pytest.Function, name: str) -> tuple[str, ...] | None:
        """The closest ``name`` marker's arguments, checked; ``None`` if it has none."""
        marker = definition.get_closest_marker(name)
        if marker is None:
            return None
        if marker.kwargs or not marker.args or not all(isinstance(a, str) for a in marker.args):
            self.error(
                f"{definition.nodeid}: @pytest.mark.{name}: expected "
                f"{_MARKERS[name].partition(':')[0]}, each a string; got {marker.args!r}"
                + (f" {marker.kwargs!r}" if marker.kwargs else "")
            )
            return ()
        return marker.args


def _tenants_file(config: pytest.Config) -> Path:
    """``--tenants-file``, else ``$TENANTS_FILE`` (both from the current directory), else
    the rootdir's tenants.yaml: the same file whichever folder pytest is started from."""
    given: str | None = config.getoption("dispatcher_tenants_file") or os.environ.get(
        "TENANTS_FILE"
    )
    if given:
        return config.invocation_params.dir / given
    return config.rootpath / "tenants.yaml"


def _unknown_tenant(name: str, tenant_set: TenantSet, disabled_ok: bool = False) -> str:
    """Why ``name`` cannot be selected; ``""`` if it can."""
    names = [t.name for t in tenant_set]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"no tenant '{name}' in {tenant_set.file}{hint}"
    if not disabled_ok and not tenant_set[name].enabled:
        return f"tenant '{name}' is disabled in {tenant_set.file}; disabled tenants are not tested"
    return ""


def _unknown_app(path: str) -> str:
    """Why ``path`` names no importable app module; ``""`` if it does (typos must not
    silently deselect every test, while an app no tenant runs just selects none)."""
    module = path.partition(":")[0]
    try:
        if importlib.util.find_spec(module) is not None:
            return ""
    except (ImportError, ValueError):
        pass
    return f"app module '{module}' was not found"


def _runs(tenant: TenantConfig, path: str) -> bool:
    """Whether the tenant runs ``path``: its module, or exactly its ``module:factory``."""
    module, _, factory = path.partition(":")
    return module == tenant.module and factory in ("", tenant.factory)


def _parametrized_by_test(metafunc: pytest.Metafunc) -> bool:
    """A test that parametrizes an argument named ``tenant`` itself is left alone."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        argnames = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(argnames, str):
            argnames = [n.strip() for n in argnames.split(",")]
        if "tenant" in argnames:
            return True
    return False


def _tenant_param(item: pytest.Item) -> object:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("tenant") if callspec is not None else None


# -- temporary folders and databases ------------------------------------------------------------


@dataclass
class _Template:
    """A tenant's instance folder and database as built once, copied for every test."""

    folder: Path
    #: SQLite: the database file, relative to the folder. PostgreSQL: the template database.
    database: str
    backend: str


class _Workspace:
    """Puts tenants on temporary folders and fresh databases, from templates built once."""

    def __init__(self, tenant_set: TenantSet, base: Path) -> None:
        self.tenant_set = tenant_set
        self.base = base
        self.templates: dict[tuple[str, str], _Template] = {}
        self.prepared: set[str] = set()
        self.count = itertools.count()
        self._postgres: _Postgres | None = None

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
        _dispose(built)  # a template database must have no open connection to be copied
        self.templates[key] = _Template(folder, database, backend)
        return self.templates[key]

    def release(self, tenant: TenantConfig) -> None:
        """The test is over: its PostgreSQL database goes (folders stay, as tmp_path's do)."""
        url = make_url(tenant.database_uri)
        if self._postgres is not None and _backend(url) == "postgresql":
            self._postgres.release(url)

    @property
    def postgres(self) -> _Postgres | None:
        if self._postgres is None:
            try:
                psycopg = importlib.import_module("psycopg")
            except ImportError:
                return None
            self._postgres = _Postgres(psycopg)
        return self._postgres

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.close()


class _Postgres:
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


def _dispose(flask_app: Flask) -> None:
    """Close the app's pooled connections now, not at some later garbage collection."""
    for engine in app_engines(flask_app):
        engine.dispose()


_STATE = pytest.StashKey[_State]()
_TEST_ROOT = pytest.StashKey[Path]()
