"""The dispatcher: one WSGI app that routes each request to its tenant by host, then by path.

Host mounts are one dictionary lookup of the request's ``Host`` (lower-cased, port and trailing
dot removed when it is not already in that form); path mounts one lookup of the path's leading
segment(s). Both cost the same at 10 or 100,000 tenants. The path split is werkzeug's
``DispatcherMiddleware``'s, done in one step: ``SCRIPT_NAME`` gets the mount and ``PATH_INFO``
the rest, so ``url_for``, redirects and static files work under the prefix (docs/routing.md
says why it is not ``DispatcherMiddleware`` itself). Anything unknown gets a plain 404 that
names no tenant; a malformed host or a ``..`` segment gets 400; ``/_dispatcher/health`` is
answered on every host::

    dispatcher = Dispatcher(load_tenants("tenants.yaml"))
    # uWSGI: application = dispatcher; edits to tenants.yaml are picked up live
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import BadRequest, InternalServerError, NotFound, ServiceUnavailable
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.sansio.utils import host_is_trusted
from werkzeug.wrappers import Response

from .build import build_app, operator_interrupt
from .eviction import LiveApps
from .holds import CHECK_INTERVAL, store_for, worker_name
from .isolation import SecretKeys
from .limits import concurrency_limit, worker_threads
from .logs import install_record_factory
from .metrics import Metrics
from .metrics_access import allowed
from .metrics_worker import process_metrics
from .rules import RESERVED_PREFIX
from .running import record_running
from .spec import TenantSet
from .tenant import TenantConfig
from .tenantapp import STATES, States, TenantApp
from .watch import FileWatcher, compare

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Flask

log = logging.getLogger("dispatcher")

HEALTH_PATH = f"{RESERVED_PREFIX}/health"
METRICS_PATH = f"{RESERVED_PREFIX}/metrics"
#: A DNS name has at most 253 characters; with ":port" and a trailing dot, 260.
_LONGEST_HOST = 260
#: Closed apps that were frozen (gc.freeze) before one full collection reclaims them.
REFREEZE_AFTER = 16
#: Hosts seen in a form not in the table (a port, upper case), remembered; emptied when full.
_LEARNED_HOSTS = 4096
_NOT_FOUND = NotFound()
_BAD_REQUEST = BadRequest()
#: What a request gets when its tenant has as many in flight as it may (``limits:``).
_BUSY = ServiceUnavailable(retry_after=1)
_ERROR = InternalServerError()


class Answer:
    """A routing-table entry that always gives the same answer: a held tenant's 503, or what
    a host that is no tenant's gets. It has what the dispatcher reads from a tenant's
    :class:`~dispatcher.tenantapp.TenantApp` when it serves a request."""

    __slots__ = ("app", "flight", "limit", "name", "used")

    def __init__(self, app: WSGIApplication, name: str = "-") -> None:
        self.app = app
        self.name = name
        self.flight: deque[None] = deque()
        self.limit = sys.maxsize
        self.used = False


#: Where a host goes when it is not exactly a host tenant's name (see Routes.learn_host).
MALFORMED = Answer(BadRequest())
NOWHERE = Answer(NotFound())
PATHS = Answer(NotFound())  # the path decides

Target = TenantApp | Answer


class Routes:
    """One tenant set's routing table. Never changed once built: a reload or a hold builds a
    new one and swaps it in whole, so a request always finishes on the table it started on.

    ``hosts`` maps a ``Host`` header as a client sends it to where it goes: a host tenant's
    handle, or :data:`PATHS` for ``server_names``. Other forms (a port, upper case, a name
    that only path mounts answer on when ``server_names`` is unset) are normalised once and
    remembered in ``learned``, which is bounded: no client can make it grow without end.
    """

    def __init__(
        self,
        tenant_set: TenantSet,
        tenants: dict[str, TenantApp],
        states: States,
        metrics: Metrics,
        held: frozenset[str] = frozenset(),
    ) -> None:
        self.tenant_set = tenant_set
        self.tenants = tenants
        self.states = states
        self.metrics = metrics
        self.held = held & tenants.keys()
        self._states_version = -1
        self._states: dict[str, str] = {}
        targets: dict[str, Target] = dict(tenants)
        for name in self.held:
            retry_after = tenants[name].tenant.maintenance or 60
            targets[name] = Answer(ServiceUnavailable(retry_after=retry_after), name)
        self.server_names = tenant_set.server_names
        self.hosts: dict[str, Target] = dict.fromkeys(self.server_names or (), PATHS)
        self.hosts.update((h, targets[a.name]) for a in tenants.values() for h in a.tenant.hosts)
        self.learned: dict[str, Target] = {}
        self.paths = {a.tenant.path: targets[a.name] for a in tenants.values() if a.tenant.path}
        # Mounts of two or more segments (``/eu/acme``), deepest first; usually none.
        self.deep = sorted({p.count("/") for p in self.paths} - {1}, reverse=True)
        # Used for its rewriting of environ only: its "app" does nothing (see Dispatcher).
        self.proxy_fix = None
        if tenant_set.proxy is not None:
            self.proxy_fix = ProxyFix(_nothing, **tenant_set.proxy.model_dump())

    def learn_host(self, raw: str) -> Target:
        """Where a host not seen in this form before goes; remembered unless malformed."""
        host = normalise_host(raw) if len(raw) <= _LONGEST_HOST else ""
        if not host:  # never remembered: no client can fill the table with them
            return MALFORMED
        target = self.hosts.get(host)
        if target is None:
            target = NOWHERE if self.server_names is not None else PATHS
        if len(self.learned) >= _LEARNED_HOSTS:
            self.learned = {}
        self.learned[raw] = target
        return target

    def deep_mount(self, path: str) -> tuple[str, Target] | None:
        """The mount of several segments that ``path`` is under, if any."""
        for depth in self.deep:
            end = 0
            for _ in range(depth):
                end = path.find("/", end + 1)
                if end < 0:
                    end = len(path)
                    break
            tenant = self.paths.get(path[:end])
            if tenant is not None:
                return path[:end], tenant
        return None

    def reserved(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """``/_dispatcher/...``: ``health`` counts tenants, naming none; ``metrics`` names them,
        so it answers only allowed clients: anyone else gets the 404 of an unknown path."""
        path = environ.get("PATH_INFO")
        if path == METRICS_PATH and allowed(environ, self.tenant_set.metrics_allow):
            text, content_type = self.metrics.render(*self.snapshot())
            response = Response(text, content_type=content_type)
            response.headers["Cache-Control"] = "no-store"
            return response(environ, start_response)
        if path != HEALTH_PATH:
            return _NOT_FOUND(environ, start_response)
        body = {
            "status": "ok",
            "tenants": self.counts(),
            # Which file this node serves: nodes that disagree have drifted apart.
            "tenants_file_sha256": self.tenant_set.tenants_file_sha256,
        }
        response = Response(json.dumps(body), mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response(environ, start_response)

    def snapshot(self) -> tuple[dict[str, int], dict[str, str]]:
        """For the metrics: requests in flight (tenants that have some) and every state (made
        again only when a state changed: the metrics compare it once a second)."""
        in_flight = {name: len(h.flight) for name, h in self.tenants.items() if h.flight}
        if self._states_version != self.states.version:
            self._states_version = self.states.version
            held = self.held
            self._states = {
                n: "maintenance" if n in held else h.state for n, h in self.tenants.items()
            }
        return in_flight, self._states

    def counts(self) -> dict[str, int]:
        """Tenants per state, held ones counted as in maintenance: constant time per call."""
        counts = {state: self.states.counts[state] for state in STATES}
        for name in self.held:
            counts[self.tenants[name].state] -= 1
            counts["maintenance"] += 1
        return counts


def _nothing(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    return ()


class Dispatcher:
    """The WSGI app of a whole tenants file: routes requests, and follows the file's edits.

    Eager tenants are built when it is created. A background thread per process (started
    again in a forked child) looks at the tenants file and the holds folder once a second,
    builds added and changed tenants beside the running set and swaps them in, evicts idle
    apps and retries failed builds: no request ever waits for any of it. ``watch=False``
    leaves the file alone; ``background=False`` runs none of it until :meth:`tick` is called.
    """

    def __init__(
        self, tenant_set: TenantSet, *, watch: bool = True, background: bool = True
    ) -> None:
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
        self.worker = worker_name()
        self._force = False
        self._frozen_garbage = 0
        self._held: frozenset[str] = frozenset()
        self._tick_lock = threading.Lock()
        self._ticker: _Ticker | None = None
        if background:
            self._ticker = _Ticker(self)
            _restart_after_fork(self)
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
        raw = environ.get("HTTP_HOST")
        if raw is None:
            raw = environ.get("SERVER_NAME", "")
        target = routes.hosts.get(raw)
        if target is None:
            target = routes.learned.get(raw) or routes.learn_host(raw)
            if target is MALFORMED:
                return _BAD_REQUEST(environ, start_response)
        path = environ.get("PATH_INFO", "")
        raw_uri = environ.get("REQUEST_URI") or environ.get("RAW_URI") or ""
        if ("/." in path or "%" in raw_uri) and _is_hostile(path, raw_uri):
            return _BAD_REQUEST(environ, start_response)
        if target is PATHS:
            end = path.find("/", 1)
            mount = path if end < 0 else path[:end]
            found = routes.paths.get(mount)
            if found is None:  # a deeper mount, the reserved prefix, or nothing
                if mount == RESERVED_PREFIX:
                    return routes.reserved(environ, start_response)
                deep = routes.deep_mount(path) if routes.deep else None
                if deep is None:
                    return _NOT_FOUND(environ, start_response)
                mount, found = deep
                end = len(mount) if len(path) > len(mount) else -1
            # As werkzeug's DispatcherMiddleware splits it: the mount moves to SCRIPT_NAME.
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + mount
            environ["PATH_INFO"] = path[end:] if end >= 0 else ""
            target = found
        elif path.startswith(RESERVED_PREFIX) and _is_reserved(path):
            return routes.reserved(environ, start_response)
        elif target is NOWHERE:
            return _NOT_FOUND(environ, start_response)
        flight = target.flight
        flight.append(None)  # atomic: counted in flight with no lock
        said = None
        if self._metered:  # someone may read the metrics (metrics: allow:): keep the status
            said = _Said()
            said.status = "500"  # until the app says otherwise: one that raises has failed
            said.start_response = start_response
            said.started = perf_counter()
            start_response = said.respond
        try:
            if len(flight) > target.limit:
                self.metrics.rejected(target.name, "concurrency")
                return _BUSY(environ, start_response)
            target.used = True
            app = target.app
            if app is None:  # not built (yet): build it, or answer 503
                return target.serve_unbuilt(environ, start_response)  # type: ignore[union-attr]
            return app(environ, start_response)
        except BaseException as e:
            if isinstance(e, Exception) or operator_interrupt(e):
                raise
            # SystemExit (or the like) from a view: it must not end the worker.
            log.error("tenant '%s': a request raised %s; answered 500", target.name, repr(e))
            return _ERROR(environ, start_response)
        finally:
            flight.pop()
            if said is not None:  # one deque.append; the background thread adds them up
                self._record((target.name, said.status, perf_counter() - said.started))

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
            if self._frozen_garbage >= REFREEZE_AFTER:
                self._reclaim_frozen()
            self.metrics.flush(*self.routes.snapshot())
            for handle in list(self.states.failed.values()):
                if not handle.tenant.lazy:
                    handle.start_build()

    def _reclaim_frozen(self) -> None:
        """Collect the apps closed since they were frozen (``gc.freeze`` after a build keeps
        full collections short, but hides what becomes garbage): one full collection, on this
        background thread, after enough of them (a reload or holds dropped them)."""
        started = time.perf_counter()
        closed, self._frozen_garbage = self._frozen_garbage, 0
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        log.info(
            "reclaimed %d closed app(s) in %.0f ms", closed, (time.perf_counter() - started) * 1000
        )

    def reload_now(self) -> None:
        """Re-read the tenants file on the next tick, even if it looks unchanged (SIGHUP)."""
        self._force = True
        if self._ticker is not None:
            self._ticker.wake.set()

    def swap(self, tenant_set: TenantSet) -> Routes:
        """Build ``tenant_set`` beside the running one and switch to it; return the old table.

        Unchanged tenants keep their app objects and connection pools; new and changed eager
        ones (and ones whose build had failed) are built before the switch, on this thread.
        """
        started = time.perf_counter()
        old = self.routes
        running = {name: handle.tenant for name, handle in old.tenants.items()}
        self.live.idle_timeout = tenant_set.idle_timeout
        self.live.max_live_apps = tenant_set.max_live_apps
        self.create_databases = tenant_set.create_databases
        self._metered = bool(tenant_set.metrics_allow)
        handles = self._handles(tenant_set, old.tenants)
        _build_eager(h for h in handles.values() if h is not old.tenants.get(h.name))
        self._set_routes(Routes(tenant_set, handles, self.states, self.metrics, self._held))
        record_running(tenant_set)
        self.secrets.keep_only(set(handles))
        for handle in old.tenants.values():
            if handles.get(handle.name) is not handle:
                self.live.forget(handle)
                self._frozen_garbage += handle.freeze and handle.app is not None
                handle.close()
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
        if self._ticker is not None:
            drained = frozenset(name for name in held if self._let_go(name))
            self.holds.report(self.worker, drained)

    def _let_go(self, name: str) -> bool:
        """Whether a held tenant has no request in flight and no app open (dropping it)."""
        handle = self.tenants.get(name)
        if handle is None:
            return True
        if handle.app is None:
            return not handle.building
        if handle.evict():  # its next build, once released, reads what the holder left
            self._frozen_garbage += handle.freeze
            log.info("tenant '%s' held: its app is closed until the hold is released", name)
            return True
        return False

    def close(self) -> None:
        """Stop the background thread and release every tenant's pooled connections."""
        if self._ticker is not None:
            self._ticker.stop()
        if self.holds is not None:
            self.holds.forget(self.worker)
            self.holds.close()
        for handle in self.tenants.values():
            handle.close()

    def _handles(
        self, tenant_set: TenantSet, running: dict[str, TenantApp]
    ) -> dict[str, TenantApp]:
        evicting = self.live.enabled
        handles: dict[str, TenantApp] = {}
        for tenant in tenant_set.enabled:
            handle = running.get(tenant.name)
            if handle is None or handle.tenant != tenant or handle.state == "failed":
                on_built = self.live.built if tenant.lazy and evicting else None
                handle = TenantApp(
                    tenant,
                    self._build,
                    states=self.states,
                    limit=concurrency_limit(tenant.max_concurrent, worker_threads()),
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
    delays the others by :data:`~dispatcher.tenantapp.BUILD_WAIT` at most."""
    for handle in handles:
        if not handle.tenant.lazy:
            handle.wait_for_build()


class _Ticker:
    """The background thread of one dispatcher in one process: :meth:`Dispatcher.tick`, once
    a second. It holds the dispatcher weakly and ends when the dispatcher is gone or closed."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = weakref.ref(dispatcher)
        self.wake = threading.Event()
        self.stopped = False
        self.thread = threading.Thread(target=self.run, name="dispatcher ticks", daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            self.wake.wait(CHECK_INTERVAL)
            self.wake.clear()
            dispatcher = self.dispatcher()
            if dispatcher is None or self.stopped:
                return
            try:
                dispatcher.tick()
            except BaseException:  # the ticks must go on, whatever one of them met
                log.exception("the dispatcher's background check failed; trying again")
            del dispatcher

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()


def _restart_after_fork(dispatcher: Dispatcher) -> None:
    """A forked child (a uWSGI worker without lazy-apps) has none of its parent's threads."""
    ref = weakref.ref(dispatcher)

    def restart() -> None:
        found = ref()
        if found is not None and found._ticker is not None and not found._ticker.stopped:
            found._ticker = _Ticker(found)

    os.register_at_fork(after_in_child=restart)
    try:  # uWSGI forks its workers in C: os.register_at_fork does not see it
        import uwsgi
    except ImportError:
        return
    previous = getattr(uwsgi, "post_fork_hook", None)

    def post_fork() -> None:
        if previous is not None:
            previous()
        restart()

    uwsgi.post_fork_hook = post_fork


def normalise_host(raw: str) -> str:
    """``"Acme.Example.com.:8080"`` → ``"acme.example.com"``; ``""`` if malformed: characters
    outside a host name or IPv6 literal, or a port that is empty, not 1 to 65535 in digits,
    or followed by anything (``name:80:80``)."""
    # The whole value is validated as it came: werkzeug's get_host drops a ":80" suffix
    # *before* validating, so it would pass "name:80:80" as "name:80".
    if not host_is_trusted(raw):
        return ""
    host = raw.lower()
    if host.startswith("["):  # IPv6 literal: the port, if any, follows the bracket
        return host.partition("]")[0] + "]"
    return host.partition(":")[0].rstrip(".")


def request_host(environ: WSGIEnvironment) -> str:
    """The request's host as mounts are matched: ``Host`` header, else ``SERVER_NAME``."""
    raw = environ.get("HTTP_HOST")
    if raw is None:
        raw = environ.get("SERVER_NAME", "")
    if len(raw) > _LONGEST_HOST:  # no valid host is this long
        return ""
    return normalise_host(raw)


class _Said:
    """Passed on as a request's ``start_response``: keeps the status line the app answers.

    Slotted and without ``__init__``: created once per request, so every instruction counts
    (a closure over a local costs twice as much, docs/benchmarks.md).
    """

    __slots__ = ("start_response", "started", "status")
    start_response: StartResponse
    started: float
    status: str

    def respond(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        self.status = status
        return self.start_response(status, headers, exc_info)


def _is_reserved(path: str) -> bool:
    return path == RESERVED_PREFIX or path[len(RESERVED_PREFIX)] == "/"


def _is_hostile(path: str, raw_uri: str) -> bool:
    """A ``.``/``..`` segment, or an encoded slash in the raw URI, that could cross mounts."""
    if "/." in path and any(segment in (".", "..") for segment in path.split("/")):
        return True
    return "%" in raw_uri and "%2f" in raw_uri.partition("?")[0].lower()
