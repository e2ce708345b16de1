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
    """Import and call the tenant's factory, check and isolate the app, create a new schema.

    With ``create_database``, a missing PostgreSQL database is created first. Raises
    :class:`BuildError` (:class:`~dispatcher.errors.IsolationError` for an app that could
    reach another tenant's data, :class:`TenantCodeError` when the tenant's code raised).
    """
    make_instance_folder(tenant.instance_path)
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
    """A tenant's app for the length of a block (a command's work on it), logging as the
    tenant; its pooled connections are closed afterwards. ``options`` go to :func:`build_app`.
    """
    with tenant_context(tenant.name):
        app = build_app(tenant, **options)
        try:
            yield app
        finally:
            dispose_engines(app)
