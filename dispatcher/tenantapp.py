"""A tenant's entry in the routing table: its app once built, and what its requests need.

:class:`TenantApp` builds its tenant's app off the request thread (at boot for eager tenants,
on the first request for lazy ones) and never fails: a build that raises or is refused leaves
a 503 for that tenant alone, retried about a second later, then less and less often (up to
every 30 s); a factory that hangs holds its own build thread, and requests wait for it at most
:data:`BUILD_WAIT` seconds before they get a 503. The dispatcher serves each request with the
handle's ``app``, counting it in ``flight`` meanwhile without a lock (``deque.append``/``pop``
are atomic under the GIL): the concurrency limit, idle eviction and the metrics read that::

    handle = TenantApp(tenant_config, build_app, states=States())
    handle.wait_for_build(EAGER_WAIT)    # at boot, for an eager tenant (it builds on)
    handle.app                           # the Flask app, or None (lazy, failed, evicted)
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from flask import Flask
from werkzeug.exceptions import ServiceUnavailable

from . import collector
from .build import TenantCodeError
from .database import dispose_engines
from .errors import BuildError
from .logs import tenant_context
from .tenant import TenantConfig

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .metrics import Metrics

log = logging.getLogger("dispatcher")

#: A failed build is tried again after 1 s, then 2, 4, 8, 16 and from then on every 30 s.
FIRST_RETRY_SECONDS = 1.0
RETRY_SECONDS = 30.0
#: Requests wait at most this long for their tenant's build; then they get a 503.
BUILD_WAIT = 10.0
#: Starting, or applying an edit, waits at most this long for each eager tenant's build
#: before going on (the build goes on, on its thread): a slow factory holds up the others'
#: requests by this much at most, never by its whole build.
EAGER_WAIT = 1.0
#: The health endpoint's words for a tenant's state.
STATES = ("ready", "failed", "lazy", "maintenance")
#: State changes remembered for views that follow them (the metrics' states); a view that
#: fell further behind rebuilds itself once.
MOVES_KEPT = 4096

Builder = Callable[[TenantConfig], Flask]


class States:
    """How many tenants are in each state, kept up to date as they change (the health
    endpoint reads it in constant time), which ones failed (the background retries), and
    which ones changed lately: what the once-a-second metrics need, so that their work
    follows what changed, not the number of tenants."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter(dict.fromkeys(STATES, 0))
        self.failed: dict[str, TenantApp] = {}
        #: Moves by one at every change: whoever keeps a view of the states knows it is stale.
        self.version = 0
        #: (version, tenant name) of the last changes: names, so that no handle a reload
        #: replaced (and its app) is kept alive here.
        self._moves: deque[tuple[int, str]] = deque(maxlen=MOVES_KEPT)
        self._lock = threading.Lock()

    def move(self, handle: TenantApp, old: str | None, new: str | None) -> None:
        with self._lock:
            if old is None and new is not None:  # a new handle: only a new table names it,
                self.counts[new] += 1  # and a table's first view is made whole
                return
            self.version += 1
            self._moves.append((self.version, handle.name))
            if old is not None:
                self.counts[old] -= 1
            if new is not None:
                self.counts[new] += 1
            if new == "failed":
                self.failed[handle.name] = handle
            elif old == "failed" and self.failed.get(handle.name) is handle:
                del self.failed[handle.name]

    def moved_since(self, version: int) -> tuple[set[str] | None, int]:
        """The tenants whose state changed after ``version`` (``None`` if that is further
        back than :data:`MOVES_KEPT` changes), and the version they bring a view to."""
        with self._lock:
            moves, now = self._moves, self.version
            if now != version and (not moves or moves[0][0] > version + 1):
                return None, now
            moved = set()
            for seen, name in reversed(moves):
                if seen <= version:
                    break
                moved.add(name)
            return moved, now


class TenantApp:
    """One tenant's app (once built), its state, and its requests in flight."""

    #: Held for moments only (starting or ending a build, an eviction, a first request), never
    #: while a factory runs: one lock for every tenant costs nothing, one each 8 MB at 100,000.
    _lock = threading.Lock()
    # Slots: a node may hold 100,000 of these, most never asked for.
    __slots__ = (
        "_building",
        "_built_at",
        "_failures",
        "_retry_at",
        "_state",
        "_states",
        "app",
        "builder",
        "error",
        "flight",
        "freeze",
        "last_used",
        "limit",
        "metrics",
        "mount",
        "name",
        "on_built",
        "plain_flask",
        "tenant",
        "used",
    )

    def __init__(
        self,
        tenant: TenantConfig,
        builder: Builder,
        *,
        states: States | None = None,
        limit: int | None = None,
        on_built: Callable[[TenantApp], None] | None = None,
        freeze: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.tenant = tenant
        self.name = tenant.name
        #: Its path mount (``"/acme"``), what its requests' ``SCRIPT_NAME`` gets; ``""`` if none.
        self.mount = tenant.path or ""
        self.builder = builder
        self.app: Flask | None = None
        #: Whether the app's class keeps Flask's ``__call__``, which only calls ``wsgi_app``
        #: (where middleware goes): then requests call ``app.wsgi_app``, one call fewer.
        self.plain_flask = False
        self.error: str | None = None
        #: One item per request in flight: a deque's append and pop are atomic under the GIL
        #: (and, unlike a list's, never reallocate). Made on the first request: a deque
        #: takes 624 bytes, times 100,000 tenants most of which are never asked for.
        self.flight: deque[None] | None = None
        #: Set by every request; idle eviction resets it once a second.
        self.used = False
        #: ``time.monotonic()`` when its app was built, or last seen used (one float each
        #: only for the tenants that were built).
        self.last_used = 0.0
        self.limit = limit or sys.maxsize
        self.on_built = on_built
        #: Move what a build created out of the collector's way (``gc.freeze``) once it is
        #: built: for apps meant to live long (not evictable ones, which must stay collectable).
        self.freeze = freeze
        self.metrics = metrics
        self._states = states or States()
        self._state = "maintenance" if tenant.maintenance is not None else "lazy"
        self._states.move(self, None, self._state)
        self._building: _Build | None = None
        self._built_at = 0  # collector.freezes() when the app was built
        self._failures = 0
        self._retry_at = 0.0

    @property
    def state(self) -> str:
        """``ready``, ``failed``, ``maintenance`` or ``lazy`` (not built yet)."""
        return self._state

    @property
    def building(self) -> bool:
        """Whether a build is under way (in this process: one the process it was forked from
        had under way has no thread here)."""
        building = self._building
        return building is not None and building.pid == os.getpid()

    @property
    def in_flight(self) -> int:
        """Requests being served: counted while the tenant's app handles them."""
        return len(self.flight) if self.flight is not None else 0

    def first_flight(self) -> deque[None]:
        """The tenant's ``flight``, made on its first request (once, however many race)."""
        with self._lock:
            if self.flight is None:
                self.flight = deque()
            return self.flight

    def serve_unbuilt(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """A request for a tenant with no app: build it (waiting up to :data:`BUILD_WAIT`),
        then serve the request, or answer 503 if there is still no app."""
        app = self.wait_for_build()
        if app is None:
            return self.unavailable(environ, start_response)
        return app(environ, start_response)

    def unavailable(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """The 503 of a tenant without an app: in maintenance, or not (yet) built."""
        retry_after = self.tenant.maintenance or max(1, round(self._retry_at - time.monotonic()))
        return ServiceUnavailable(retry_after=retry_after)(environ, start_response)

    def wait_for_build(self, timeout: float | None = None) -> Flask | None:
        """The app, building it first if needed, waiting at most until the build's deadline
        (or ``timeout`` seconds, if sooner; the build goes on all the same)."""
        build = self.start_build()
        return self.app if build is None else build.wait(timeout)

    def start_build(self) -> _Build | None:
        """Start a build on its own thread unless built, building, held or waiting to retry."""
        if self.tenant.maintenance is not None:
            return None
        with self._lock:
            if self.app is not None:
                return None
            if self._building is not None and self._building.pid == os.getpid():
                return self._building
            # (A build of the process this one was forked from has no thread here: build anew.)
            if time.monotonic() < self._retry_at:
                return None
            self._building = build = _Build(self)
        build.thread.start()
        return build

    def _build(self, build: _Build) -> None:
        """The build thread's work: call the builder, record the outcome, never raise."""
        started = time.perf_counter()
        built_at = collector.freezes()  # a freeze from here on may have caught the app
        app = None
        with tenant_context(self.name):
            try:
                app = self.builder(self.tenant)
            except TenantCodeError as e:
                error = str(e)
                log.error(
                    "tenant '%s' failed to build; it answers 503: %s",
                    self.name,
                    e,
                    exc_info=e.__cause__,
                )
            except BuildError as e:  # our own refusal: the reason says it all
                error = str(e)
                log.error("tenant '%s' refused, it answers 503: %s", self.name, e)
            except BaseException as e:
                error = f"{type(e).__name__}: {e}"
                log.exception("tenant '%s' failed to build; it answers 503", self.name)
        with self._lock:
            if app is not None:
                self.plain_flask = type(app).__call__ is Flask.__call__
                self._built_at = built_at
                self.app, self.error, self._failures = app, None, 0
                self.last_used = time.monotonic()
                self._set_state("ready")
            else:
                self._failures += 1
                delay = min(RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (self._failures - 1))
                self._retry_at = time.monotonic() + delay
                self.error = error
                self._set_state("failed")
            self._building = None
        build.done.set()
        if self.metrics is not None:
            self.metrics.build(self.name, app is not None, time.perf_counter() - started)
        if app is not None:
            log.debug("tenant '%s' built in %.3f s", self.name, time.perf_counter() - started)
            if self.freeze:  # a full collection then never scans this app again
                collector.freeze()
            if self.on_built is not None:
                self.on_built(self)

    @property
    def frozen(self) -> bool:
        """Whether its app (or the one it just dropped) was frozen after its build: once
        dropped, it is garbage only :func:`~dispatcher.collector.reclaim` frees."""
        return self._built_at < collector.freezes()

    def evict(self) -> bool:
        """Drop the app and close its pools unless a request is in flight; ``True`` if done.

        No lock on the request path: a request counts itself in flight, then reads the app.
        Here the app is taken away first and the count read after, so a request that could
        have read it is seen, and the app put back.
        """
        with self._lock:
            app = self.app
            if app is None or self.flight:
                return False
            self.app = None
            if self.flight:
                self.app = app
                return False
            self._set_state("lazy")
        dispose_engines(app)
        return True

    def close(self) -> None:
        """Release the app's pooled connections: a reload removed or replaced this tenant.

        Requests still running on the app keep the connections they hold until they finish.
        """
        with self._lock:
            self._set_state(None)
        if self.app is not None:
            dispose_engines(self.app)

    def _set_state(self, new: str | None) -> None:
        old, self._state = self._state, new or self._state
        if old != new:
            self._states.move(self, old, new)


class _Build:
    """One build of one tenant, on its own thread; requests wait on it up to a deadline."""

    def __init__(self, handle: TenantApp) -> None:
        self.handle = handle
        self.pid = os.getpid()
        self.deadline = time.monotonic() + BUILD_WAIT
        self.done = threading.Event()
        self.thread = threading.Thread(
            target=handle._build, args=(self,), name=f"build {handle.name}", daemon=True
        )

    def wait(self, timeout: float | None = None) -> Flask | None:
        left = max(0.0, self.deadline - time.monotonic())
        self.done.wait(left if timeout is None else min(left, timeout))
        return self.handle.app
