"""Idle eviction of lazy tenants: memory grows with the tenants in use, not the tenants that exist.

With ``idle_timeout`` and/or ``max_live_apps`` at the top of tenants.yaml, each lazy tenant's
handle is an :class:`EvictableTenantApp`: it knows its requests in flight (counted by
:class:`~dispatcher.build.TenantApp` until the response is closed, so a streaming response
counts too) and when it was last used. :class:`LiveApps`
drops apps idle longer than ``idle_timeout`` (on the dispatcher's once-a-second tick) and, past
``max_live_apps`` built apps, the least recently used ones (when another is built). A tenant
with a request in flight is never evicted; an evicted tenant is rebuilt on its next request::

    live = LiveApps(idle_timeout=900, max_live_apps=1000)
    handle = EvictableTenantApp(tenant, builder, live)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from flask import Flask

from .build import TenantApp
from .database import app_engines
from .tenant import TenantConfig

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .metrics import Metrics, NullMetrics

log = logging.getLogger("dispatcher")


class LiveApps:
    """The built apps of evictable tenants, and the policy that drops them."""

    def __init__(self, idle_timeout: int | None, max_live_apps: int | None) -> None:
        self.idle_timeout = idle_timeout
        self.max_live_apps = max_live_apps
        self.apps: dict[str, EvictableTenantApp] = {}
        self._lock = threading.Lock()

    def built(self, handle: EvictableTenantApp) -> None:
        """Count a newly built app; past the cap, evict the least recently used idle ones."""
        with self._lock:
            self.apps[handle.name] = handle
            over = len(self.apps) - (self.max_live_apps or len(self.apps))
            candidates = sorted(
                (h for h in self.apps.values() if h is not handle), key=lambda h: h.last_used
            )
        evicted = 0
        for candidate in candidates:
            if evicted >= over:
                break
            if self.evict(candidate, idle_since=None):
                evicted += 1

    def sweep(self) -> int:
        """Evict every app idle for longer than ``idle_timeout``; return how many."""
        if self.idle_timeout is None:
            return 0
        cutoff = time.monotonic() - self.idle_timeout
        # No gc.collect() here: this runs on a request thread, and a full collection over many
        # live apps pauses it for ~200 ms; the collector reclaims evicted apps in its own time.
        return sum(self.evict(h, idle_since=cutoff) for h in list(self.apps.values()))

    def evict(self, handle: EvictableTenantApp, idle_since: float | None) -> bool:
        if not handle.evict(idle_since):
            return False
        with self._lock:
            if self.apps.get(handle.name) is handle:
                del self.apps[handle.name]
        log.info("tenant '%s' evicted (idle); it is rebuilt on its next request", handle.name)
        return True

    def forget(self, handle: TenantApp) -> None:
        """A reload removed or replaced this tenant."""
        with self._lock:
            if self.apps.get(handle.name) is handle:
                del self.apps[handle.name]


class EvictableTenantApp(TenantApp):
    """A lazy tenant's handle that knows when it is in use, so it can be evicted safely."""

    def __init__(
        self,
        tenant: TenantConfig,
        builder: Callable[[TenantConfig], Flask],
        live: LiveApps,
        metrics: Metrics | NullMetrics | None = None,
    ) -> None:
        super().__init__(tenant, builder, metrics)
        self.live = live
        self.last_used = time.monotonic()

    def build(self) -> Flask | None:
        fresh = self.app is None
        app = super().build()
        if fresh and app is not None:
            self.live.built(self)
        return app

    def evict(self, idle_since: float | None) -> bool:
        """Drop the app unless a request is in flight or it was used after ``idle_since``."""
        with self._flight_lock:  # TenantApp counts a request in flight before it uses the app
            app = self.app
            if app is None or self.in_flight:
                return False
            if idle_since is not None and self.last_used > idle_since:
                return False
            self.app = None
        for engine in app_engines(app):
            engine.dispose()
        return True

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self.last_used = time.monotonic()
        return super().__call__(environ, start_response)
