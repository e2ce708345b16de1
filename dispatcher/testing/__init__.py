"""A pytest plugin that runs an app's integration tests once per tenant (DESIGN section 7).

Enable it in the root ``conftest.py`` (or with ``-p dispatcher.testing``) and write ordinary
Flask tests; every test that takes ``tenant``, ``app``, ``client`` or ``runner`` runs once per
enabled tenant of ``tenants.yaml``, the tenant's name in its id, on a temporary instance folder
and database (never the real ``instance/``)::

    pytest_plugins = ["dispatcher.testing"]

    def test_home(client):                  # test_home[acme], test_home[globex], ...
        assert client.get("/").status_code == 200

Each tenant's app is built once per session (per ``app_config``) on a folder and database of
its own, as for a new tenant, and reused: after every test the app's config, the folder and
the database are put back as built (a SQLite file copy; on PostgreSQL, tables emptied and
reseeded, sequences restarted), and what cannot be put back is built anew. docs/testing.md
has the rest: selecting tenants (``--tenant``, the markers), ``app_config``, what isolation
costs, CI.

This module is the plugin pytest loads: its hooks and fixtures are defined here, where pytest
looks for them. The work behind them is in :mod:`.selection` (which tenants a test runs for),
:mod:`.workspace` (their folders, databases and apps), :mod:`.reuse` and :mod:`.postgres`
(putting those back after a test); none is a public interface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterator
from typing import Any, NoReturn

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from werkzeug.test import Client

from ..dispatch import Dispatcher
from ..errors import BuildError, IsolationError
from ..tenant import TenantConfig
from .selection import (
    MARKERS,
    STATE,
    UNSELECTED,
    State,
    parametrized_by_test,
    tenant_param,
    tenants_file,
)
from .workspace import Lease, Workspace

#: Whether the test passed or was skipped (set as its call is reported): a failed test's app
#: is not reused.
_PASSED = pytest.StashKey[bool]()

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
    for line in MARKERS.values():
        config.addinivalue_line("markers", line)
    config.stash[STATE] = State(config)


def pytest_report_header(config: pytest.Config) -> str:
    selected = config.getoption("dispatcher_tenants")
    only = f" (--tenant {', '.join(selected)})" if selected else ""
    return f"dispatcher: tenants file {tenants_file(config)}{only}"


@pytest.hookimpl(tryfirst=True)  # first, so the tenant leads the id: test_x[acme-GET]
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    uses_tenant = "tenant" in metafunc.fixturenames and not parametrized_by_test(metafunc)
    if not uses_tenant and "dispatcher_client" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[STATE]
    tenant_set = state.load()
    if tenant_set is None or not uses_tenant:
        return
    names = state.select(metafunc.definition, tenant_set)
    if names:
        metafunc.parametrize("tenant", names, indirect=True, ids=names)
    else:
        metafunc.parametrize("tenant", [UNSELECTED], indirect=True, ids=["unselected"])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" or (report.when == "setup" and not report.passed):
        # A skip is no failure; an expected failure (xfail) is one all the same.
        skipped = report.skipped and not hasattr(report, "wasxfail")
        item.stash[_PASSED] = report.passed or skipped
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Raised here, after collection, rather than where found: an exception during collection
    # becomes a collection error with a traceback, not a usage error.
    errors = config.stash[STATE].errors
    if errors:
        raise pytest.UsageError("\n".join(errors))
    unselected = [item for item in items if tenant_param(item) is UNSELECTED]
    if unselected:
        config.hook.pytest_deselected(items=unselected)
        items[:] = [item for item in items if tenant_param(item) is not UNSELECTED]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def app_config() -> dict[str, Any]:
    """Extra Flask config for every app this test builds: override it to test a setting.

    Override it in a ``conftest.py``, a module or a class (or parametrize it indirectly); its
    items are set on the app's config last, after the tenant's own ``config`` and ``TESTING``,
    and apps are built and reused per distinct ``app_config``::

        @pytest.fixture
        def app_config():
            return {"NOTES_PER_PAGE": 2}

    :return: the settings, ``{}`` unless overridden.
    """
    return {}


@pytest.fixture
def tenant(
    request: pytest.FixtureRequest, app_config: dict[str, Any], _dispatcher_tenants: Workspace
) -> Iterator[TenantConfig]:
    """The tenant this test runs for, on an instance folder and database as a new tenant's.

    A test that takes it (or ``app``, ``client``, ``runner``) runs once per selected tenant of
    the tenants file (``--tenant``, ``@pytest.mark.tenants``, ``@pytest.mark.tenant_app``),
    the tenant's name in its id. The instance folder and database are throwaway ones, in the
    state of a new tenant's, and put back as they were after the test; the real
    ``instance/`` is never read or written.

    :param app_config: merged into the tenant's ``config``, after ``TESTING=True``.
    :return: the tenant's :class:`~dispatcher.tenant.TenantConfig`, moved onto those
        folders: ``instance_path``, ``database_uri``, ``path`` / ``hosts``, ``config``.
    :raises pytest.fail.Exception: the test fails if the tenant's configuration could reach
        a database other than its throwaway one (an ``IsolationError``, named), or if the
        fixture was requested with ``request.getfixturevalue()`` rather than as an argument.
    """
    name = getattr(request, "param", None)
    if name is UNSELECTED:
        pytest.skip("no tenant selected")
    if not isinstance(name, str):
        pytest.fail(
            "the 'tenant' fixture is parametrized when tests are collected: take it (or app, "
            "client, runner) as a test argument rather than with request.getfixturevalue()",
            pytrace=False,
        )
    lease = _lease(request, _dispatcher_tenants, name, app_config)
    request.node.stash[_LEASE] = lease
    yield lease.tenant
    _dispatcher_tenants.release(lease, passed=request.node.stash.get(_PASSED, False))


@pytest.fixture
def app(
    request: pytest.FixtureRequest, tenant: TenantConfig, _dispatcher_tenants: Workspace
) -> Flask:
    """The tenant's Flask app, built and isolated as the dispatcher builds it, TESTING on.

    Built once per tenant (and ``app_config``) for the session, by
    :func:`~dispatcher.build.build_app` (factory, own ``SECRET_KEY``, isolated session cookie,
    SQLite hardening), and reused: after each test its config, instance folder and database
    are put back as built. A failed test's app, or one marked ``@pytest.mark.fresh_app``, is
    not reused.

    :param tenant: the tenant it is built for (so the test runs once per tenant).
    :return: the app; no app or request context is pushed.
    :raises pytest.fail.Exception: the test fails, with the reason alone, if the app is refused
        (``IsolationError``: an engine or instance folder that is not its own). Any other
        error of the tenant's code while building is the test's error, with its traceback.
    """
    try:
        return _dispatcher_tenants.app(request.node.stash[_LEASE])
    except IsolationError as e:
        refused = e
    _refuse(refused)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the tenant's app (paths are relative to the tenant's mount).

    A path tenant's requests carry its prefix as ``SCRIPT_NAME``, as the dispatcher mounts
    it: ``client.get("/auth/login")``, and links and redirects under ``tenant.path``.

    :param app: the tenant's app.
    :return: ``app.test_client()``, with its own cookie jar.
    """
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A runner for the tenant's Flask CLI commands.

    :param app: the tenant's app; commands run in its app context, on the test's database.
    :return: ``app.test_cli_runner()``: ``runner.invoke(args=["create-user", "alice"])``.
    """
    return app.test_cli_runner()


@pytest.fixture
def dispatcher_client(
    request: pytest.FixtureRequest, app_config: dict[str, Any], _dispatcher_tenants: Workspace
) -> Iterator[Client]:
    """A test client of the whole dispatcher: every enabled tenant, on temporary folders.

    A :class:`~dispatcher.Dispatcher` of the tenants file with every enabled tenant moved onto
    throwaway folders and databases, not watching the file; route with the URL path and a
    ``Host`` header. It does not multiply a test by itself; in a per-tenant test, that tenant
    is served from the test's own folder and database (what the test wrote through ``client``
    shows here). The dispatcher is closed after the test.

    :param app_config: applied to every tenant's app, as for ``app``.
    :return: a :class:`werkzeug.test.Client` of the dispatcher, with a cookie jar.
    :raises pytest.fail.Exception: as ``tenant``, if a tenant's configuration is refused.
        A tenant that cannot be built (its factory raises) or tested here (PostgreSQL
        without psycopg) answers 503 instead, with a warning, never built on its real
        database: the others are still served.
    """
    workspace = _dispatcher_tenants
    # In a per-tenant test, that tenant is the test's own (same folder and database as `app`).
    own = request.getfixturevalue("tenant") if "tenant" in request.fixturenames else None
    root = workspace.test_root(request)
    leases: list[Lease] = []
    tenants = []
    for unplaced in workspace.tenant_set.tenants:
        if own is not None and unplaced.name == own.name:
            tenants.append(own)
        elif unplaced.enabled and unplaced.maintenance is None:
            try:
                leases.append(_lease(request, workspace, unplaced.name, app_config))
            except (BuildError, pytest.skip.Exception) as e:
                if isinstance(e, IsolationError):  # (a refused config already failed the test)
                    raise
                # Its factory fails, or PostgreSQL cannot be tested here: it answers 503, as a
                # tenant that failed to build does, and every other tenant is served.
                request.node.warn(
                    pytest.PytestWarning(
                        f"dispatcher_client: tenant '{unplaced.name}' answers 503 ({e})"
                    )
                )
                held = dataclasses.replace(unplaced, maintenance=1)
                tenants.append(dataclasses.replace(held, instance_path=str(root / held.name)))
                continue
            tenants.append(leases[-1].tenant)
        else:  # never built: moved off the real instance/ all the same
            tenants.append(dataclasses.replace(unplaced, instance_path=str(root / unplaced.name)))
    tenant_set = dataclasses.replace(
        workspace.tenant_set, tenants=tuple(tenants), instance_root=str(root)
    )
    # Not watching the tenants file: an edit during the run must not reload the real folders.
    dispatcher = Dispatcher(tenant_set, watch=False)
    yield Client(dispatcher)
    dispatcher.close()  # its background thread stops; every app's engines are disposed
    passed = request.node.stash.get(_PASSED, False)
    for lease in leases:
        workspace.release(lease, passed)


@pytest.fixture(scope="session")
def _dispatcher_tenants(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workspace]:
    """The session's tenants file, templates and temporary folders (private)."""
    tenant_set = pytestconfig.stash[STATE].load()
    if tenant_set is None:  # first needed here, past collection: the test errors, not the run
        pytest.fail("\n".join(pytestconfig.stash[STATE].errors), pytrace=False)
    workspace = Workspace(tenant_set, tmp_path_factory.mktemp("dispatcher"))
    yield workspace
    workspace.close()


#: The test's lease of its own tenant, shared by the ``tenant`` and ``app`` fixtures.
_LEASE = pytest.StashKey[Lease]()


def _lease(
    request: pytest.FixtureRequest, workspace: Workspace, name: str, app_config: dict[str, Any]
) -> Lease:
    """Tenant ``name`` for this test; a configuration that could reach another database than
    the test's throwaway one fails the test, naming the reason."""
    fresh_app = request.node.get_closest_marker("fresh_app") is not None
    try:
        return workspace.lease(name, app_config, request, fresh_app)
    except IsolationError as e:
        refused = e
    _refuse(refused)


def _refuse(error: IsolationError) -> NoReturn:
    """Fail the test with the reason alone (raised outside the ``except``, so that pytest
    does not show the same message twice, chained)."""
    pytest.fail(f"dispatcher.testing: IsolationError: {error}", pytrace=False)
