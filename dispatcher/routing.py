"""The dispatcher: one WSGI app that routes each request to its tenant by host, then by path.

Host mounts are an exact dictionary lookup of the request's host (lower-cased, port and
trailing dot removed); path mounts go through werkzeug's ``DispatcherMiddleware``, which sets
``SCRIPT_NAME``/``PATH_INFO`` so ``url_for``, redirects and static files work under the prefix.
Both cost the same at 10 or 10,000 tenants. Anything unknown gets a plain 404 that names no
tenant; a malformed host or a ``..`` segment gets 400; ``/_dispatcher/health`` is answered on
every host, ``/_dispatcher/metrics`` only to the clients ``metrics: {allow: ...}`` lets in::

    dispatcher = Dispatcher(load_tenants("tenants.yaml"))
    # uWSGI: application = dispatcher; edits to tenants.yaml are picked up live
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from functools import lru_cache
from time import perf_counter
from typing import TYPE_CHECKING

from flask import Flask
from werkzeug.exceptions import BadRequest, NotFound, ServiceUnavailable
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.sansio.utils import get_host
from werkzeug.wrappers import Response

from .build import TenantApp, build_app
from .errors import BuildError
from .eviction import EvictableTenantApp, LiveApps
from .logs import install_record_factory
from .metrics import Metrics
from .metrics_access import allowed
from .metrics_worker import Flusher, process_metrics
from .reload import Reloader, record_running
from .rules import RESERVED_PREFIX
from .spec import TenantSet
from .tenant import TenantConfig

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("dispatcher")

HEALTH_PATH = f"{RESERVED_PREFIX}/health"
METRICS_PATH = f"{RESERVED_PREFIX}/metrics"
_RESERVED_FOLDER = RESERVED_PREFIX + "/"
#: A DNS name has at most 253 characters; with ":port" and a trailing dot, 260.
_LONGEST_HOST = 260


class Routes:
    """One tenant set's routing table. Never changed once built: a reload builds a new one and
    swaps it in whole, so a request always finishes on the table it started on."""

    def __init__(
        self,
        tenant_set: TenantSet,
        tenants: dict[str, TenantApp],
        held: frozenset[str] = frozenset(),
        metrics: Metrics | None = None,
    ) -> None:
        self.tenant_set = tenant_set
        self.tenants = tenants
        self.held = held
        self.metrics = metrics
        targets: dict[str, WSGIApplication] = {
            name: _held(handle) if name in held else handle for name, handle in tenants.items()
        }
        self.hosts = {h: targets[a.name] for a in tenants.values() for h in a.tenant.hosts}
        mounts = {a.tenant.path: targets[a.name] for a in tenants.values() if a.tenant.path}
        self.paths = DispatcherMiddleware(NotFound(), mounts)
        self.server_names = tenant_set.server_names
        self.wsgi_app: WSGIApplication = self.route
        if tenant_set.proxy is not None:
            self.wsgi_app = ProxyFix(self.route, **tenant_set.proxy.model_dump())

    def route(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Pick the tenant for this request: reserved paths, then host mounts, then paths."""
        host = request_host(environ)
        path = environ.get("PATH_INFO", "")
        if not host or _is_hostile(path, environ):
            return BadRequest()(environ, start_response)
        if path == RESERVED_PREFIX or path.startswith(_RESERVED_FOLDER):
            return self.reserved(environ, start_response)
        tenant = self.hosts.get(host)
        if tenant is not None:
            return tenant(environ, start_response)
        if self.server_names is not None and host not in self.server_names:
            return NotFound()(environ, start_response)
        return self.paths(environ, start_response)

    def reserved(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """``/_dispatcher/...``: ``health`` counts tenants, naming none; ``metrics`` names them,
        so it answers only allowed clients: anyone else gets the 404 of an unknown path."""
        path = environ.get("PATH_INFO")
        if (
            path == METRICS_PATH
            and self.metrics is not None
            and allowed(environ, self.tenant_set.metrics_allow)
        ):
            text, content_type = self.metrics.render(*self.snapshot())
            response = Response(text, content_type=content_type)
            response.headers["Cache-Control"] = "no-store"
            return response(environ, start_response)
        if path != HEALTH_PATH:
            return NotFound()(environ, start_response)
        counts = {"ready": 0, "failed": 0, "lazy": 0, "maintenance": 0}
        for state in self.snapshot()[1].values():
            counts[state] += 1
        body = {"status": "ok", "tenants": counts}
        response = Response(json.dumps(body), mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response(environ, start_response)

    def snapshot(self) -> tuple[dict[str, int], dict[str, str]]:
        """Requests in flight (tenants that have some) and the state of every tenant."""
        in_flight = {name: h.in_flight for name, h in self.tenants.items() if h.in_flight}
        held = self.held
        states = {
            name: "maintenance" if name in held else h.state for name, h in self.tenants.items()
        }
        return in_flight, states


class Dispatcher:
    """The WSGI app of a whole tenants file: routes requests, and reloads when the file changes.

    Eager tenants are built when it is created. Each worker process checks the file's
    modification at most once a second, on a request (see :mod:`dispatcher.reload`).
    """

    def __init__(self, tenant_set: TenantSet, *, watch: bool = True) -> None:
        install_record_factory()
        self._secret_owners: dict[str, str] = {}
        self.live = LiveApps(tenant_set.idle_timeout, tenant_set.max_live_apps)
        self.create_databases = tenant_set.create_databases
        self.metrics = process_metrics(tenant_set.instance_root)
        self.routes = Routes(tenant_set, self._handles(tenant_set, {}), metrics=self.metrics)
        # Under uWSGI, a thread writes this worker's figures out each second, requests or not.
        self.flusher: Flusher | None = None
        if self.metrics.folder is not None:
            self.flusher = Flusher(self.metrics, lambda: self.routes.snapshot())
            self.flusher.ensure_running()
        record_running(tenant_set)
        self.reloader = None
        if watch:
            self.reloader = Reloader(self, tenant_set.file, tenant_set.instance_root)
            self.reloader.check_holds()

    @property
    def tenant_set(self) -> TenantSet:
        """The tenant set being served."""
        return self.routes.tenant_set

    @property
    def tenants(self) -> dict[str, TenantApp]:
        """The mounted tenants by name."""
        return self.routes.tenants

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.reloader is not None and self.reloader.due():
            self.reloader.check()
            self.live.sweep()
            self.flush_metrics()
        return self.routes.wsgi_app(environ, start_response)

    def flush_metrics(self) -> None:
        """Write out this worker's figures (the once-a-second tick does it on a request)."""
        self.metrics.flush(*self.routes.snapshot())
        if self.flusher is not None:
            self.flusher.ensure_running()  # a fork (uWSGI without lazy-apps) left it behind

    def swap(self, tenant_set: TenantSet) -> Routes:
        """Build ``tenant_set`` beside the running one and switch to it; return the old table.

        Unchanged tenants keep their app objects and connection pools; new and changed ones
        (and ones whose build had failed) are built before the switch.
        """
        old = self.routes
        self.live.idle_timeout = tenant_set.idle_timeout
        self.live.max_live_apps = tenant_set.max_live_apps
        self.create_databases = tenant_set.create_databases
        new = Routes(tenant_set, self._handles(tenant_set, old.tenants), old.held, self.metrics)
        kept = {id(handle) for handle in new.tenants.values()}
        self.routes = new  # one attribute store: requests see the old table or the new one
        record_running(tenant_set)
        owners = {handle.name for handle in new.tenants.values()}
        self._secret_owners = {k: v for k, v in self._secret_owners.items() if v in owners}
        for handle in old.tenants.values():
            if id(handle) not in kept:
                self.live.forget(handle)
                handle.close()
        return old

    def hold(self, names: frozenset[str]) -> None:
        """Answer 503 for exactly these tenants (while their schema migrates), keeping apps."""
        routes = self.routes
        if names != routes.held:
            self.routes = Routes(routes.tenant_set, routes.tenants, names, self.metrics)
            log.info("tenants held in maintenance: %d", len(names & routes.tenants.keys()))

    def _handles(
        self, tenant_set: TenantSet, running: dict[str, TenantApp]
    ) -> dict[str, TenantApp]:
        evicting = tenant_set.idle_timeout is not None or tenant_set.max_live_apps is not None
        handles: dict[str, TenantApp] = {}
        for tenant in tenant_set.enabled:
            kind = EvictableTenantApp if tenant.lazy and evicting else TenantApp
            handle = running.get(tenant.name)
            if (
                handle is None
                or handle.tenant != tenant
                or handle.state == "failed"
                or type(handle) is not kind
            ):
                if kind is EvictableTenantApp:
                    handle = EvictableTenantApp(tenant, self._build, self.live, self.metrics)
                else:
                    handle = TenantApp(tenant, self._build, self.metrics)
                if not tenant.lazy:
                    handle.build()
            handles[tenant.name] = handle
        return handles

    def _build(self, tenant: TenantConfig) -> Flask:
        """Build a tenant's app, refusing one whose ``SECRET_KEY`` another tenant already has."""
        app = build_app(tenant, create_database=self.create_databases)
        fingerprint = hashlib.sha256(str(app.config["SECRET_KEY"]).encode()).hexdigest()
        owner = self._secret_owners.setdefault(fingerprint, tenant.name)
        if owner != tenant.name:
            raise BuildError(
                f"its SECRET_KEY is also tenant '{owner}''s; give each tenant its own key in "
                "instance/<name>/config.py, or remove it to have one generated"
            )
        return app


def _held(handle: TenantApp) -> WSGIApplication:
    """A 503 in place of a tenant whose schema is being migrated (counted like any answer)."""
    refusal = ServiceUnavailable(retry_after=handle.tenant.maintenance or 60)

    def held(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = perf_counter()
        try:
            return refusal(environ, start_response)
        finally:
            handle.metrics.observe(handle.name, 503, perf_counter() - started)

    return held


@lru_cache(maxsize=4096)
def normalise_host(raw: str) -> str:
    """``"Acme.Example.com.:8080"`` → ``"acme.example.com"``; ``""`` if malformed."""
    host = get_host("http", raw.lower())
    if host.startswith("["):  # IPv6 literal: the port, if any, follows the bracket
        return host.partition("]")[0] + "]"
    return host.partition(":")[0].rstrip(".")


def request_host(environ: WSGIEnvironment) -> str:
    """The request's host as mounts are matched: ``Host`` header, else ``SERVER_NAME``."""
    raw = environ.get("HTTP_HOST")
    if raw is None:
        raw = environ.get("SERVER_NAME", "")
    if len(raw) > _LONGEST_HOST:  # no valid host is this long; never fill the cache with it
        return ""
    return normalise_host(raw)


def _is_hostile(path: str, environ: WSGIEnvironment) -> bool:
    """A ``.``/``..`` segment, or an encoded slash in the raw URI, that could cross mounts."""
    if "/." in path and any(segment in (".", "..") for segment in path.split("/")):
        return True
    raw = environ.get("REQUEST_URI") or environ.get("RAW_URI") or ""
    return "%" in raw and "%2f" in raw.partition("?")[0].lower()
