"""The dispatcher: the WSGI app of a whole tenants file.

:class:`Dispatcher` routes each request with the current :class:`~dispatcher.routing.Routes`
and serves it with its tenant's app, counted in flight (for the concurrency limit, idle
eviction and the metrics); once a second its background thread (:mod:`dispatcher.background`)
calls :meth:`Dispatcher.tick`, which applies what changed: an edited tenants file, holds put
or released, idle apps, failed builds to retry. No request waits for any of that::

    dispatcher = Dispatcher(load_tenants("tenants.yaml"))
    # uWSGI: application = dispatcher; edits to tenants.yaml are picked up live
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import InternalServerError, ServiceUnavailable

from . import collector, tenantapp
from .background import Ticker
from .build import build_app, operator_interrupt
from .eviction import LiveApps
from .holds import store_for, worker_name
from .isolation import SecretKeys
from .limits import RETRY_AFTER, concurrency_limit, worker_threads
from .logs import install_record_factory, tenant_context
from .metrics import Answered
from .metrics_worker import process_metrics
from .routing import (
    BAD_REQUEST,
    MALFORMED,
    NOT_FOUND,
    NOWHERE,
    PATHS,
    Routes,
    is_hostile,
    is_reserved,
)
from .rules import RESERVED_PREFIX
from .running import record_running
from .tenant import TenantConfig, TenantSet
from .tenantapp import States, TenantApp
from .watch import FileWatcher, compare

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from flask import Flask

log = logging.getLogger("dispatcher")

#: Closed apps that were frozen (gc.freeze) before one full collection reclaims them.
REFREEZE_AFTER = 16
#: What a request gets when its tenant has as many in flight as it may (``limits:``).
_BUSY = ServiceUnavailable(retry_after=RETRY_AFTER)
_ERROR = InternalServerError()


class Dispatcher:
    """The WSGI app of a whole tenants file: routes requests, and follows the file's edits.

    Each request goes to its tenant's app by host, then by the path's first segment; an
    unknown host or path is a 404 (never some other tenant), a tenant that failed to build,
    is held or is at its concurrency limit answers 503, and ``/_dispatcher/health`` (and
    ``/_dispatcher/metrics``, to the clients ``metrics: {allow: ...}`` lets in) answers on
    every host. Eager tenants are built when it is created,
    lazy ones on their first request. A background thread per process (started again in a
    forked child) looks at the tenants file and the holds once a second, builds added and
    changed tenants beside the running set and swaps them in, evicts idle apps and retries
    failed builds: no request ever waits for any of it. ::

        dispatcher = Dispatcher(load_tenants("tenants.yaml"))
        ...
        dispatcher.close()

    Use it as the WSGI ``application`` (``wsgi.py``) or through :func:`create_dispatcher`,
    which also configures logging; call :meth:`close` when done with it.

    :param tenant_set: the loaded tenants file (:func:`~dispatcher.load_tenants`).
    :param watch: follow edits of the tenants file and the holds (maintenance) of its
        tenants. ``False`` serves ``tenant_set`` as it is, for its whole life.
    :param background: run the background work on a thread of its own. ``False`` runs none
        of it until :meth:`tick` is called (tests, one-shot commands).
    """

    def __init__(
        self, tenant_set: TenantSet, *, watch: bool = True, background: bool = True
    ) -> None:
        """Build the eager tenants (each on its own thread, waiting for each at most
        :data:`~dispatcher.tenantapp.EAGER_WAIT`), then start the background thread.

        Raises nothing for a tenant's or the machine's trouble: a tenant whose build fails or
        hangs answers 503 and is retried later; a metrics folder that cannot be written, or a
        control database that cannot be reached, is logged and served around. Installs the
        log record factory that names the tenant on every record (:mod:`dispatcher.logs`).
        """
        install_record_factory()
        self.metrics = process_metrics(tenant_set.instance_root)
        self._record = self.metrics.record
        #: Whether requests are measured: not when nobody may read them (``allow: []``).
        self._metered = bool(tenant_set.metrics_allow)
        self.states = States()
        self.secrets = SecretKeys()
        self.live = LiveApps(tenant_set.idle_timeout, tenant_set.max_live_apps)
        self.create_databases = tenant_set.create_databases
        handles = self._handles(tenant_set, {})
        _build_eager(handles.values())
        self._set_routes(Routes(tenant_set, handles, self.states, self.metrics))
        record_running(tenant_set)
        self.watcher = FileWatcher(tenant_set) if watch else None
        self.holds = store_for(tenant_set) if watch else None
        self._worker_name, self._worker_pid = "", 0
        self._force = False
        self._frozen_garbage = 0
        #: The table served when the memory loading it used was last given back.
        self._settled: Routes | None = None
        self._held: frozenset[str] = frozenset()
        self._tick_lock = threading.Lock()
        self._ticker: Ticker | None = None
        if background:
            self._ticker = Ticker(self)
        if self.holds is not None:
            self._follow_holds()

    @property
    def tenant_set(self) -> TenantSet:
        """The tenant set being served."""
        return self.routes.tenant_set

    @property
    def tenants(self) -> dict[str, TenantApp]:
        """The mounted tenants by name."""
        return self.routes.tenants

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Route one request (host tenants, then path mounts; reserved paths on every host)
        and hand it to its tenant's app, counted in flight meanwhile.

        The hot path of every request, so it is written for speed: one dictionary lookup for
        the host, one for the path's first segment, and no call that can be saved.
        """
        routes = self.routes  # read once: a reload swapping the table meanwhile is not seen
        if routes.proxy_fix is not None:
            routes.proxy_fix(environ, start_response)  # rewrites environ, answers nothing
        try:  # all three set (uWSGI, werkzeug; Host from HTTP/1.1): subscripts, no call
            raw, path, raw_uri = environ["HTTP_HOST"], environ["PATH_INFO"], environ["REQUEST_URI"]
        except KeyError:
            raw, path, raw_uri = _request_fields(environ)
        target = routes.hosts.get(raw)
        if target is None:
            target = routes.learned.get(raw) or routes.learn_host(raw)
            if target is MALFORMED:
                return BAD_REQUEST(environ, start_response)
        if ("/." in path or "%" in raw_uri) and is_hostile(path, raw_uri):
            return BAD_REQUEST(environ, start_response)
        if target is PATHS:  # by the first segment: "/acme/notes/1" is "acme", "/notes/1"
            try:  # (str.find's start argument alone costs more than this split)
                lead, segment, rest = path.split("/", 2)
                rest = "/" + rest
            except ValueError:  # "/acme", with no slash after it (or "/", "", "acme")
                lead, _, segment = path.partition("/")
                rest = ""
            target = routes.segments.get(segment)
            if target is not None and not lead:  # (a lead: no "/" first, no mount's path)
                path_info = rest
            else:  # a deeper mount, the reserved prefix, or nothing
                if is_reserved(path):
                    return routes.reserved(environ, start_response)
                target = routes.deep_mount(path) if routes.deep else None
                if target is None:
                    return NOT_FOUND(environ, start_response)
                path_info = path[len(target.mount) :]
            # As werkzeug's DispatcherMiddleware splits it: the mount moves to SCRIPT_NAME.
            try:
                script = environ["SCRIPT_NAME"]
            except KeyError:  # (PEP 3333 lets a server leave an empty one out)
                script = ""
            environ["SCRIPT_NAME"] = script + target.mount if script else target.mount
            environ["PATH_INFO"] = path_info
        elif RESERVED_PREFIX in path and is_reserved(path):  # `in`: no call for most paths
            return routes.reserved(environ, start_response)
        elif target is NOWHERE:
            return NOT_FOUND(environ, start_response)
        flight = target.flight
        if flight is None:  # the tenant's first request
            flight = target.first_flight()  # type: ignore[union-attr]  # Answers have one
        flight.append(None)  # atomic: counted in flight with no lock
        if self._metered:  # someone may read the metrics (metrics: allow:): keep the status
            said = _Said()  # no status until the app gives one: one that raises has failed
            said.start_response = start_response
            said.tenant = target.name
            said.started = perf_counter()
            start_response = said.respond
            self._record(said)  # one deque.append: in flight until it has ended
        else:
            said = None
        try:
            if len(flight) > target.limit:
                self.metrics.rejected(target.name, "concurrency")
                return _BUSY(environ, start_response)
            target.used = True
            app = target.app
            if app is None:  # not built (yet): build it, or answer 503
                return target.serve_unbuilt(environ, start_response)  # type: ignore[union-attr]
            if target.plain_flask:  # then a Flask app: what its __call__ would call
                return app.wsgi_app(environ, start_response)  # type: ignore[attr-defined,no-any-return]
            return app(environ, start_response)
        except BaseException as e:
            if isinstance(e, Exception) or operator_interrupt(e):
                raise
            # SystemExit (or the like) from a view: it must not end the worker.
            with tenant_context(target.name):  # the app context is gone: tag the line here
                log.error("tenant '%s': a request raised %s; answered 500", target.name, repr(e))
            return _ERROR(environ, start_response)
        finally:
            flight.pop()
            if said is not None:  # the background thread adds the ended ones up
                said.ended = perf_counter()

    def _set_routes(self, routes: Routes) -> None:
        self.routes = routes  # one attribute store: a request sees the old table or the new

    def tick(self) -> None:
        """One round of the background work: file edits, holds, idle apps, failed builds."""
        with self._tick_lock:
            if self.watcher is not None:
                force, self._force = self._force, False
                started = perf_counter()
                tenant_set = self.watcher.changed(force)
                if tenant_set is not None:
                    self.swap(tenant_set)
                if tenant_set is not None or self.watcher.refused:
                    self.metrics.reload(tenant_set is not None, perf_counter() - started)
            if self.holds is not None:
                self._follow_holds()
            self.live.sweep()
            if self._frozen_garbage + self.live.frozen_garbage >= REFREEZE_AFTER:
                self._reclaim_frozen()
            self.metrics.flush(*self.routes.snapshot())
            if self._settled is not self.routes:  # after a boot or a reload, and its flush
                self._settled = self.routes
                collector.release_free_memory()
            for handle in list(self.states.failed.values()):
                if not handle.tenant.lazy and handle.name not in self._held:
                    handle.start_build()  # (a held one is built when its hold ends)

    def _reclaim_frozen(self) -> None:
        """Collect the apps closed since they were frozen (``gc.freeze`` after a build keeps
        full collections short, but hides what becomes garbage): one full collection, on this
        background thread, after enough of them (a reload or holds dropped them)."""
        closed, self._frozen_garbage = self._frozen_garbage, 0
        closed += self.live.take_frozen_garbage()
        seconds = collector.reclaim()
        log.info("reclaimed %d closed app(s) in %.0f ms", closed, seconds * 1000)

    def reload_now(self) -> None:
        """Re-read the tenants file on the next tick, even if it looks unchanged (SIGHUP)."""
        self._force = True
        if self._ticker is not None:
            self._ticker.wake.set()

    def swap(self, tenant_set: TenantSet) -> Routes:
        """Build ``tenant_set`` beside the running one and switch to it; return the old table.

        Unchanged tenants keep their app objects and connection pools; new and changed eager
        ones (and ones whose build had failed) are built before the switch, on this thread,
        waiting for each :data:`~dispatcher.tenantapp.EAGER_WAIT` at most (a slower one builds
        on after the switch, its requests waiting for it).
        """
        started = time.perf_counter()
        old = self.routes
        running = {name: handle.tenant for name, handle in old.tenants.items()}
        self.live.idle_timeout = tenant_set.idle_timeout
        self.live.max_live_apps = tenant_set.max_live_apps
        self.create_databases = tenant_set.create_databases
        self._metered = bool(tenant_set.metrics_allow)
        handles = self._handles(tenant_set, old.tenants)
        held = self._held  # built when their hold ends, not under the holder's work
        _build_eager(
            h for h in handles.values() if h is not old.tenants.get(h.name) and h.name not in held
        )
        self._set_routes(Routes(tenant_set, handles, self.states, self.metrics, self._held))
        record_running(tenant_set)
        self.secrets.keep_only(set(handles))
        for handle in old.tenants.values():
            if handles.get(handle.name) is not handle:
                self.live.forget(handle)
                self._frozen_garbage += handle.app is not None and handle.frozen
                handle.close()
        # What the reload built lives until the next one: out of the collector's way, as at
        # boot, else every full collection walks it (10,000 tenants: 10-15 ms, each second).
        # No collection first (100,000 tenants: 0.1 s with every thread stopped): the little
        # garbage frozen with it counts towards the next reclaim.
        collector.freeze()
        self._frozen_garbage += 1
        log.info(
            "reloaded %s in %.0f ms: %s",
            tenant_set.file,
            (time.perf_counter() - started) * 1000,
            compare(running, tenant_set),
        )
        return old

    def hold(self, names: frozenset[str]) -> None:
        """Answer 503 for exactly these tenants; ones no longer held serve again."""
        released, self._held = self._held - names, names
        routes = self.routes
        if names & routes.tenants.keys() != routes.held:
            self._set_routes(
                Routes(routes.tenant_set, routes.tenants, self.states, self.metrics, names)
            )
            log.info("tenants held in maintenance: %d", len(self.routes.held))
        for name in released:  # their app was dropped while held: eager ones are built again
            handle = routes.tenants.get(name)
            if handle is not None and handle.app is None and not handle.tenant.lazy:
                handle.start_build()

    def _follow_holds(self) -> None:
        """Apply the holds, let go of held tenants, and (a worker that ticks on its own)
        report what it let go of: a holder waits for every worker's report."""
        assert self.holds is not None
        held = self.holds.held()
        if held != self._held:
            self.hold(held)
        if self._ticker is not None and self._ticker.pid == os.getpid():
            drained = frozenset(name for name in held if self._let_go(name))
            self.holds.report(self._worker(), drained)

    def _worker(self) -> str:
        """This dispatcher's name in the holds' reports: each process reports for itself,
        also the workers a uWSGI master forked after loading it (no lazy-apps)."""
        if self._worker_pid != os.getpid():
            self._worker_name, self._worker_pid = worker_name(), os.getpid()
        return self._worker_name

    def _let_go(self, name: str) -> bool:
        """Whether a held tenant has no request in flight and no app open (dropping it)."""
        handle = self.tenants.get(name)
        if handle is None:
            return True
        if handle.app is None:
            return not handle.building
        if handle.evict():  # its next build, once released, reads what the holder left
            self.live.forget(handle)
            self._frozen_garbage += handle.frozen
            log.info("tenant '%s' held: its app is closed until the hold is released", name)
            return True
        return False

    def close(self) -> None:
        """Stop the background thread and release every tenant's pooled connections."""
        if self._ticker is not None:
            self._ticker.stop()
        if self.holds is not None:
            if self._worker_pid == os.getpid():  # it reported
                self.holds.forget(self._worker_name)
            self.holds.close()
        for handle in self.tenants.values():
            handle.close()

    def _handles(
        self, tenant_set: TenantSet, running: dict[str, TenantApp]
    ) -> dict[str, TenantApp]:
        evicting = self.live.enabled
        builder = self._build  # one bound method for them all, not one each
        threads = worker_threads()
        handles: dict[str, TenantApp] = {}
        for tenant in tenant_set.enabled:
            handle = running.get(tenant.name)
            if handle is None or handle.tenant != tenant or handle.state == "failed":
                on_built = self.live.built if tenant.lazy and evicting else None
                handle = TenantApp(
                    tenant,
                    builder,
                    states=self.states,
                    limit=concurrency_limit(tenant.max_concurrent, threads),
                    on_built=on_built,
                    freeze=on_built is None,
                    metrics=self.metrics,
                )
            handles[tenant.name] = handle
        return handles

    def _build(self, tenant: TenantConfig) -> Flask:
        """Build a tenant's app, refusing one whose ``SECRET_KEY`` another tenant already has."""
        app = build_app(tenant, create_database=self.create_databases)
        self.secrets.claim(app, tenant)
        return app


def _build_eager(handles: Iterable[TenantApp]) -> None:
    """Build the eager tenants, one at a time, each on its own thread: a factory that hangs
    or is slow delays the others by :data:`~dispatcher.tenantapp.EAGER_WAIT` at most, then
    builds on while the next one starts (its own requests wait for it, up to
    :data:`~dispatcher.tenantapp.BUILD_WAIT` from its start)."""
    for handle in handles:
        if not handle.tenant.lazy:
            handle.wait_for_build(tenantapp.EAGER_WAIT)


def _request_fields(environ: WSGIEnvironment) -> tuple[str, str, str]:
    """The Host (else the server's name), the path and the raw request URI of a request, for
    an environ that lacks one of them (HTTP/1.0 without Host, a server that sets no URI)."""
    host = environ.get("HTTP_HOST")
    if host is None:
        host = environ.get("SERVER_NAME", "")
    raw_uri = environ.get("REQUEST_URI") or environ.get("RAW_URI") or ""
    return host, environ.get("PATH_INFO", ""), raw_uri


class _Said(Answered):
    """Passed on as a request's ``start_response``: keeps the status line the app answers,
    and is then the request's record for the metrics (:class:`~dispatcher.metrics.Answered`).

    Slotted and without ``__init__``: created once per request, so every instruction counts
    (a closure over a local costs twice as much, docs/benchmarks.md).
    """

    __slots__ = ("start_response",)
    start_response: StartResponse

    def respond(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        self.status = status
        return self.start_response(status, headers, exc_info)
