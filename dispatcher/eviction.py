"""Idle eviction of lazy tenants: memory grows with the tenants in use, not the tenants that exist.

With ``idle_timeout`` and/or ``max_live_apps`` at the top of tenants.yaml, :class:`LiveApps`
keeps track of the lazy tenants whose app is built. Once a second (on the dispatcher's
background thread) it notes which were used and drops the apps idle longer than
``idle_timeout``; when another is built past ``max_live_apps``, the least recently used ones
go. A tenant with a request in flight is never evicted (:meth:`TenantApp.evict`); an evicted
tenant is rebuilt on its next request. Nothing here runs on the request path::

    live = LiveApps(idle_timeout=900, max_live_apps=1000)
    handle = TenantApp(tenant, builder, on_built=live.built)
    live.sweep()                        # once a second
"""

from __future__ import annotations

import logging
import threading
import time

from .tenantapp import TenantApp

log = logging.getLogger("dispatcher")


class LiveApps:
    """The built apps of evictable tenants, and the policy that drops them."""

    def __init__(self, idle_timeout: int | None, max_live_apps: int | None) -> None:
        self.idle_timeout = idle_timeout
        self.max_live_apps = max_live_apps
        self.apps: dict[str, TenantApp] = {}
        #: Apps evicted after a freeze had moved them out of the collector's way (see
        #: :mod:`dispatcher.collector`): the dispatcher reclaims them once there are enough.
        self.frozen_garbage = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.idle_timeout is not None or self.max_live_apps is not None

    def built(self, handle: TenantApp) -> None:
        """Count a newly built app; past the cap, evict the least recently used idle ones."""
        with self._lock:
            self.apps[handle.name] = handle
            over = len(self.apps) - (self.max_live_apps or len(self.apps))
            if over <= 0:
                return
            self._note_use(time.monotonic())
            candidates = sorted(
                (h for h in self.apps.values() if h is not handle), key=lambda h: h.last_used
            )
        evicted = 0
        for candidate in candidates:
            if evicted >= over:
                break
            evicted += self.evict(candidate)

    def sweep(self) -> int:
        """Note which apps were used; evict those idle longer than ``idle_timeout``."""
        now = time.monotonic()
        with self._lock:
            self._note_use(now)
            handles = list(self.apps.values())
        if self.idle_timeout is None:
            return 0
        cutoff = now - self.idle_timeout
        # No gc.collect() here: a full collection over many live apps pauses every thread of
        # the worker for ~200 ms; the collector reclaims evicted apps in its own time.
        return sum(self.evict(h) for h in handles if h.last_used < cutoff)

    def _note_use(self, now: float) -> None:
        for handle in self.apps.values():
            if handle.used or handle.flight:
                handle.used = False
                handle.last_used = now

    def evict(self, handle: TenantApp) -> bool:
        if not handle.evict():
            return False
        self.forget(handle)
        with self._lock:
            self.frozen_garbage += handle.frozen
        log.info("tenant '%s' evicted (idle); it is rebuilt on its next request", handle.name)
        return True

    def take_frozen_garbage(self) -> int:
        """How many evicted apps were frozen, counted from zero again."""
        with self._lock:
            count, self.frozen_garbage = self.frozen_garbage, 0
            return count

    def forget(self, handle: TenantApp) -> None:
        """The app is gone (evicted, or a reload removed or replaced the tenant)."""
        with self._lock:
            if self.apps.get(handle.name) is handle:
                del self.apps[handle.name]
