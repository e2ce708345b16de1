"""Build one tenant's app from its factory, and keep it behind a WSGI handle that never fails.

:func:`build_app` imports the tenant's module, calls its factory, applies the isolation rules
of :mod:`dispatcher.isolation` and creates the schema of a new database. :class:`TenantApp` is
what the routing table holds for a tenant: it builds the app at boot or on the first request
(``lazy``), answers 503 while the tenant is in maintenance or its build failed (retried at most
every :data:`RETRY_SECONDS`), runs each request in the tenant's logging context, counts the
requests in flight until each response is closed (refusing those beyond the tenant's limit,
:mod:`dispatcher.limits`) and reports each to :mod:`dispatcher.metrics`::

    handle = TenantApp(tenant_config)
    handle.build()                       # at boot, for eager tenants
    response = handle(environ, start_response)
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING

from flask import Flask
from werkzeug.exceptions import ServiceUnavailable

from .database import (
    answer_503_when_database_fails,
    create_new_schema,
    dispose_engines,
    ensure_database,
)
from .database import app_engines as app_engines  # re-exported: tests and plugins use it
from .errors import BuildError
from .isolation import (
    check_instance_path,
    ensure_secret_key,
    harden_sqlite,
    isolate_session_cookie,
    make_instance_folder,
)
from .limits import GRACE, RETRY_AFTER, concurrency_limit, worker_threads
from .logs import current_tenant, tenant_context, use_dispatcher_logging
from .metrics import NullMetrics
from .tenant import TenantConfig

if TYPE_CHECKING:
    from types import TracebackType

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .metrics import Metrics

log = logging.getLogger("dispatcher")

#: A tenant whose build failed is tried again on a request at most this often.
RETRY_SECONDS = 30.0


def build_app(
    tenant: TenantConfig, *, create_schema: bool = True, create_database: bool = False
) -> Flask:
    """Import and call the tenant's factory, isolate the app, create a new database's schema.

    With ``create_database``, a missing PostgreSQL database is created first.
    """
    make_instance_folder(tenant.instance_path)
    if create_database:
        ensure_database(tenant.database_uri)
    module = importlib.import_module(tenant.module)
    factory = getattr(module, tenant.factory, None)
    if not callable(factory):
        raise BuildError(f"module '{tenant.module}' has no factory '{tenant.factory}'")
    app = factory(tenant)
    if not isinstance(app, Flask):
        raise BuildError(f"factory '{tenant.app}' returned {type(app).__name__}, not a Flask app")
    check_instance_path(app, tenant)
    ensure_secret_key(app, tenant)
    isolate_session_cookie(app, tenant)
    use_dispatcher_logging(app.logger)
    answer_503_when_database_fails(app)
    engines = app_engines(app)
    for engine in engines:
        harden_sqlite(engine)
    if create_schema:
        create_new_schema(app, module)
    for engine in engines:
        # No connection opened while building may outlive it: a uWSGI master that builds
        # before forking must not hand one socket to several workers.
        engine.dispose()
    app.extensions["dispatcher"] = tenant
    return app


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


class TenantApp:
    """A tenant's entry in the routing table: its app once built, or a 503 until then."""

    def __init__(
        self,
        tenant: TenantConfig,
        builder: Callable[[TenantConfig], Flask] = build_app,
        metrics: Metrics | NullMetrics | None = None,
    ) -> None:
        self.tenant = tenant
        self.name = tenant.name
        self.builder = builder
        self.app: Flask | None = None
        self.error: str | None = None
        self._failed_at: float | None = None
        self._lock = threading.Lock()
        self.metrics = metrics or NullMetrics()
        #: ``metrics.record``: one C-level ``deque.append`` per request.
        self._record = self.metrics.record
        #: At most this many requests in flight in this worker; ``None``: no limit.
        self.limit = concurrency_limit(tenant.max_concurrent, worker_threads())
        self._limit = sys.maxsize if self.limit is None else self.limit
        #: Requests admitted and not yet closed (changed only under ``_flight_lock``).
        self.in_flight = 0
        self._flight_lock = threading.Lock()

    @property
    def state(self) -> str:
        """``ready``, ``failed``, ``maintenance`` or ``lazy`` (not built yet)."""
        if self.app is not None:
            return "ready"
        if self.tenant.maintenance is not None:
            return "maintenance"
        return "failed" if self.error is not None else "lazy"

    def build(self) -> Flask | None:
        """Build the app unless built, in maintenance, or failed less than 30 s ago.

        One lock per tenant: concurrent first requests build once, and a slow tenant never
        blocks another.
        """
        if self.tenant.maintenance is not None:
            return None
        with self._lock:
            if self.app is not None:  # built by another request while this one waited
                return self.app
            now = time.monotonic()
            if self._failed_at is not None and now - self._failed_at < RETRY_SECONDS:
                return None
            token = current_tenant.set(self.name)
            started = perf_counter()
            try:
                self.app = self.builder(self.tenant)
            except BuildError as e:  # our own refusal: the reason says it all
                self._failed_at, self.error = now, str(e)
                log.error("tenant '%s' refused, it answers 503: %s", self.name, e)
            except Exception as e:
                self._failed_at, self.error = now, f"{type(e).__name__}: {e}"
                log.exception("tenant '%s' failed to build; it answers 503", self.name)
            else:
                self.error = None
                log.debug("tenant '%s' built", self.name)
            finally:
                current_tenant.reset(token)
                self.metrics.build(self.name, self.app is not None, perf_counter() - started)
        return self.app

    def close(self) -> None:
        """Release the app's pooled connections: a reload removed or replaced this tenant.

        Requests still running on the app keep the connections they hold until they finish.
        """
        if self.app is not None:
            for engine in app_engines(self.app):
                engine.dispose()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # The hot path: explicit acquire/release and no Python-level __init__ or helper calls
        # (each costs ~1,000 instructions on CPython 3.11); see docs/benchmarks.md#metrics.
        lock = self._flight_lock
        lock.acquire()
        if self.in_flight < self._limit:
            self.in_flight += 1
            lock.release()
        else:
            lock.release()
            if not self._wait_for_a_slot():
                return self._refuse(environ, start_response)
        # Counted before the app is looked at: an evictable tenant is never dropped while a
        # request is about to use it (see dispatcher.eviction).
        exchange = _Exchange()
        exchange.handle = self
        exchange.server_start_response = start_response
        exchange.status = "500"  # until the app says otherwise: a response never started failed
        exchange.body = ()
        exchange.started = perf_counter()
        try:
            app = self.app or self.build()
            if app is None:
                retry_after = self.tenant.maintenance or int(RETRY_SECONDS)
                exchange.body = ServiceUnavailable(retry_after=retry_after)(
                    environ, exchange.start_response
                )
            else:
                token = current_tenant.set(self.name)
                try:
                    exchange.body = app(environ, exchange.start_response)
                finally:
                    current_tenant.reset(token)
        except BaseException:
            exchange.status = "500"  # the server answers 500 for an app that raised
            exchange.close()
            raise
        return exchange

    def _wait_for_a_slot(self) -> bool:
        """At the limit: wait up to :data:`~dispatcher.limits.GRACE` seconds for a slot.

        A request whose response the client already has may not be closed yet: its thread
        waits for the interpreter lock to run ``close()``, and CPython may let a few quicker
        requests go first. Without this grace a single client's back-to-back requests could
        be refused; a tenant whose requests hang still gets its 503 within milliseconds.
        """
        deadline = perf_counter() + GRACE
        while perf_counter() < deadline:
            time.sleep(GRACE / 10)  # lets the closing threads run
            with self._flight_lock:
                if self.in_flight < self._limit:
                    self.in_flight += 1
                    return True
        return False

    def _refuse(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """503 at once: the tenant already has ``limit`` requests in flight in this worker."""
        started = perf_counter()
        self.metrics.rejected(self.name, "concurrency")
        refusal = ServiceUnavailable(
            description="Too many requests to this site are in progress; try again shortly.",
            retry_after=RETRY_AFTER,
        )
        try:
            return refusal(environ, start_response)
        finally:
            self._record((self.name, 503, perf_counter() - started))


class _Exchange:
    """One admitted request: records its status on the way out, and when the server closes
    the response (streamed to the end or not), ends it: in flight - 1, one observation.

    Its attributes are set by :meth:`TenantApp.__call__` (no ``__init__``: cheaper)."""

    __slots__ = ("body", "handle", "server_start_response", "started", "status")

    handle: TenantApp
    server_start_response: StartResponse
    status: str
    body: Iterable[bytes]
    started: float

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: tuple[type[BaseException], BaseException, TracebackType]
        | tuple[None, None, None]
        | None = None,
    ) -> Callable[[bytes], object]:
        self.status = status
        return self.server_start_response(status, headers, exc_info)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        handle = self.handle
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            lock = handle._flight_lock
            lock.acquire()
            handle.in_flight -= 1
            lock.release()
            handle._record((handle.name, self.status, perf_counter() - self.started))
