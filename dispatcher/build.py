"""Build one tenant's app from its factory, inside a boundary its code cannot break out of.

:func:`build_app` imports the tenant's module and calls its factory (and, for a new database,
the app's schema creation), then makes the app safe to serve (:mod:`dispatcher.isolation`):
its own secret key and session cookie, and engines and instance folder checked to be its own.
Everything tenant code raises there, ``SystemExit`` included, becomes a :class:`BuildError`
for that tenant alone: a worker never exits because of a tenant's factory. The whole build
holds a lock file in the tenant's instance folder, so the workers of a node that boot together
build a tenant one at a time (a factory that creates its own tables cannot race itself)::

    app = build_app(tenant_config)           # or raises BuildError / IsolationError
    with built_app(tenant_config) as app:    # a command's work on one tenant
        ...
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import threading
from collections.abc import Iterator

from flask import Flask

from .database import (
    answer_503_when_database_fails,
    app_engines,
    create_new_schema,
    dispose_engines,
    ensure_database,
)
from .errors import BuildError
from .isolation import (
    check_databases,
    check_instance_path,
    ensure_secret_key,
    harden_sqlite,
    isolate_session_cookie,
    make_instance_folder,
)
from .logs import tenant_context, use_dispatcher_logging
from .tenant import TenantConfig
from .uwsgi_api import on_fork_child, uwsgi_api

__all__ = ["BuildError", "TenantCodeError", "app_engines", "build_app", "built_app"]

#: In each instance folder: held for the whole of a build, by whichever process builds.
BUILD_LOCK = ".build.lock"


class TenantCodeError(BuildError):
    """The tenant's own code (module import, factory, schema creation) raised; its traceback is
    the ``__cause__``."""


def build_app(
    tenant: TenantConfig, *, create_schema: bool = True, create_database: bool = False
) -> Flask:
    """Build one tenant's Flask app, as the dispatcher serves it.

    Imports the tenant's module and calls its factory with ``tenant``, checks that the app's
    engines and instance folder are the tenant's own, gives it its own ``SECRET_KEY`` and
    session cookie, hardens SQLite, and creates the schema of a database that has no tables
    yet. The whole build holds the lock file of the tenant's instance folder (created if
    missing), so processes building the same tenant at once build it one at a time. No
    database connection opened while building is left open.

    :param tenant: the tenant's resolved settings, from a loaded tenant set
        (``tenant_set["acme"]``).
    :param create_schema: create the tables of a new (empty) database: brought to head with
        the package's ``migrations/``, else by its ``init_db(app)`` or ``db.create_all()``.
        ``False`` leaves the database untouched (``migrate`` and ``list --build`` do).
    :param create_database: first create the tenant's PostgreSQL database if it does not
        exist (the tenant's role needs ``CREATEDB``); other backends are left alone.
    :return: the app, with the tenant's :class:`~dispatcher.tenant.TenantConfig` in
        ``app.extensions["dispatcher"]``.
    :raises TenantCodeError: the tenant's module import, factory or schema creation raised
        (``SystemExit`` included); the original exception is the ``__cause__``.
    :raises BuildError: the module has no such factory, or it returned something that is not
        a Flask app.
    :raises ~dispatcher.errors.IsolationError: the app could reach another tenant's data
        (an engine or instance folder that is not its own) or its secret key file is unusable.
    :raises sqlalchemy.exc.SQLAlchemyError: with ``create_database``, the PostgreSQL server
        could not be reached or refused to create the database.
    """
    try:
        make_instance_folder(tenant.instance_path)
    except OSError as e:  # a file in the way, a folder it may not write in: the operator's
        raise BuildError(
            f"cannot make its instance folder {tenant.instance_path}: {e.strerror or e}; "
            "move what is there away, or give the server's user the right to create it"
        ) from None
    with _build_lock(tenant.instance_path):
        if create_database:
            ensure_database(tenant.database_uri)
        with tenant_code(f"importing '{tenant.module}'"):
            module = importlib.import_module(tenant.module)
        factory = getattr(module, tenant.factory, None)
        if not callable(factory):
            raise BuildError(f"module '{tenant.module}' has no factory '{tenant.factory}'")
        with tenant_code(f"its factory '{tenant.app}'"):
            app = factory(tenant)
        if not isinstance(app, Flask):
            raise BuildError(
                f"factory '{tenant.app}' returned {type(app).__name__}, not a Flask app"
            )
        try:
            _make_safe(app, tenant)
            if create_schema:
                with tenant_code("creating its schema"):
                    create_new_schema(app, module)
        finally:
            # No connection opened while building may outlive it: a uWSGI master that builds
            # before forking must not hand one socket to several workers.
            dispose_engines(app)
    app.extensions["dispatcher"] = tenant
    return app


def _make_safe(app: Flask, tenant: TenantConfig) -> None:
    """Check what the app really uses, then give it its own key, cookie and SQLite settings."""
    check_instance_path(app, tenant)
    engines = app_engines(app)
    check_databases(app, tenant, engines)
    ensure_secret_key(app, tenant)
    isolate_session_cookie(app, tenant)
    use_dispatcher_logging(app.logger)
    answer_503_when_database_fails(app)
    for engine in engines:
        harden_sqlite(engine)


@contextlib.contextmanager
def tenant_code(what: str) -> Iterator[None]:
    """Run tenant code: anything it raises, ``SystemExit`` included, is a :class:`BuildError`.

    Only an operator's Ctrl-C (``KeyboardInterrupt`` in the main thread of a process that is
    not a uWSGI worker: the dev server, a command) goes through, so a build can be stopped.
    """
    try:
        yield
    except BuildError:
        raise
    except BaseException as e:  # SystemExit, GeneratorExit and every Exception: contained
        if operator_interrupt(e):
            raise
        detail = f": {e}" if str(e) else ""
        raise TenantCodeError(f"{what} raised {type(e).__name__}{detail}") from e


def operator_interrupt(error: BaseException) -> bool:
    """Whether ``error`` is an operator's Ctrl-C, which tenant code must not swallow.

    Only a ``KeyboardInterrupt`` in the main thread of a process that is not a uWSGI worker
    (the dev server, a command) can be one: signals reach the main thread only, and nobody
    types Ctrl-C at a uWSGI worker.
    """
    if not isinstance(error, KeyboardInterrupt):
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    return uwsgi_api() is None


#: The build locks this process holds: file descriptor -> the pid that took it. A lock belongs
#: to the open file, which a fork shares: a child forked in the middle of a build (a uWSGI
#: master without lazy-apps, still building a slow tenant) would hold it for ever, and its own
#: builds of that tenant would wait on it for ever. The child lets go of its copies
#: (:func:`_drop_parents_locks`).
_locks_held: dict[int, int] = {}


@contextlib.contextmanager
def _build_lock(folder: str) -> Iterator[None]:
    with open(os.path.join(folder, BUILD_LOCK), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file is closed
        _locks_held[f.fileno()] = os.getpid()
        try:
            yield
        finally:
            _locks_held.pop(f.fileno(), None)


def _drop_parents_locks() -> None:
    """After a fork, in the child: the parent's build locks are the parent's. Each descriptor
    is pointed at /dev/null rather than closed, so its number stays taken (the parent's thread,
    absent here, still owns the file object). (uWSGI also calls this hook, without forking,
    in a lone process without a master: its own locks are kept.)"""
    parents = [fd for fd, pid in _locks_held.items() if pid != os.getpid()]
    if not parents:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        for fd in parents:
            os.dup2(null, fd)
            del _locks_held[fd]
    finally:
        os.close(null)


on_fork_child(_drop_parents_locks)


@contextlib.contextmanager
def built_app(tenant: TenantConfig, **options: bool) -> Iterator[Flask]:
    """A tenant's app for the length of a ``with`` block: a command's work on one tenant.

    The app is built by :func:`build_app`; inside the block (and while building) log records
    name the tenant; afterwards every engine of the app is disposed, so no pooled connection
    outlives the block. ::

        with built_app(tenant_set["acme"], create_schema=False) as app, app.app_context():
            ...

    :param tenant: the tenant's resolved settings.
    :param options: ``create_schema`` and ``create_database``, passed to :func:`build_app`.
    :return: a context manager whose value is the built app.
    :raises BuildError: as :func:`build_app` raises it, when the block is entered (its
        subclasses ``TenantCodeError`` and :class:`~dispatcher.errors.IsolationError` too).
    """
    with tenant_context(tenant.name):
        app = build_app(tenant, **options)
        try:
            yield app
        finally:
            dispose_engines(app)
