"""The routing table: where each request goes, by host, then by path.

A :class:`Routes` is built for one tenant set (and the tenants held at that moment) and never
changed: :class:`dispatcher.dispatch.Dispatcher` looks a request up in it and swaps in a new
one when the tenants file or the holds change. Host mounts are one dictionary lookup of the
request's ``Host`` (lower-cased, port and trailing dot removed when it is not already in that
form); path mounts one lookup of the path's leading segment(s). Both cost the same at 10 or
100,000 tenants. Anything unknown gets a plain 404 that names no tenant; a malformed host or a
``..`` segment gets 400; ``/_dispatcher/health`` is answered on every host, and
``/_dispatcher/metrics`` to the clients ``metrics: {allow: ...}`` lets in::

    routes = Routes(tenant_set, handles, states, metrics)
    routes.hosts.get("globex.example.com")      # a tenant's handle, PATHS, ...
"""

from __future__ import annotations

import json
import sys
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from werkzeug.exceptions import BadRequest, NotFound, ServiceUnavailable
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.sansio.utils import host_is_trusted
from werkzeug.wrappers import Response

from .metrics import Metrics
from .metrics_access import allowed
from .rules import RESERVED_PREFIX
from .tenant import TenantSet
from .tenantapp import STATES, States, TenantApp

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

HEALTH_PATH = f"{RESERVED_PREFIX}/health"
_RESERVED_FOLDER = f"{RESERVED_PREFIX}/"
METRICS_PATH = f"{RESERVED_PREFIX}/metrics"
#: A DNS name has at most 253 characters; with ":port" and a trailing dot, 260.
_LONGEST_HOST = 260
#: Hosts seen in a form not in the table (a port, upper case), remembered; emptied when full.
_LEARNED_HOSTS = 4096
NOT_FOUND = NotFound()
BAD_REQUEST = BadRequest()


class Answer:
    """A routing-table entry that always gives the same answer: a held tenant's 503, or what
    a host that is no tenant's gets. It has what the dispatcher reads from a tenant's
    :class:`~dispatcher.tenantapp.TenantApp` when it serves a request."""

    __slots__ = ("app", "flight", "limit", "mount", "name", "plain_flask", "used")

    def __init__(self, app: WSGIApplication, name: str = "-", mount: str = "") -> None:
        self.app = app
        self.plain_flask = False  # a werkzeug exception, called as it is
        self.name = name
        self.mount = mount
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
        #: One snapshot at a time: the background thread's and a scrape's.
        self._snapshot_lock = threading.Lock()
        targets: dict[str, Target] = dict(tenants)
        for name in self.held:
            retry_after = tenants[name].tenant.maintenance or 60
            answer = ServiceUnavailable(retry_after=retry_after)
            targets[name] = Answer(answer, name, tenants[name].mount)
        self.server_names = tenant_set.server_names
        self.hosts: dict[str, Target] = dict.fromkeys(self.server_names or (), PATHS)
        self.hosts.update((h, targets[a.name]) for a in tenants.values() for h in a.tenant.hosts)
        self.learned: dict[str, Target] = {}
        segments: dict[str, Target] = {}
        self.deep_paths: dict[str, Target] = {}
        for handle in tenants.values():
            mount = handle.mount
            if mount.count("/") > 1:
                self.deep_paths[mount] = targets[handle.name]
            elif mount:  # keyed by the tenant's name where they are alike: no new string
                key = handle.name if mount[1:] == handle.name else mount[1:]
                segments[key] = targets[handle.name]
        #: Path mounts of one segment by that segment (``/acme``: ``"acme"``), the lookup of a
        #: request's first segment; mounts of more (``/eu/acme``) by path, usually none. When
        #: each tenant is at ``/<its name>`` and none is held, that is ``tenants`` itself: one
        #: table, not two alike (3.7 MiB at 100,000 tenants).
        self.segments: Mapping[str, Target] = tenants if segments == tenants else segments
        #: The segment counts of ``deep_paths``, most first.
        self.deep = sorted({p.count("/") for p in self.deep_paths}, reverse=True)
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

    def deep_mount(self, path: str) -> Target | None:
        """Where a path under a mount of several segments goes, if it is under one."""
        for depth in self.deep:
            end = 0
            for _ in range(depth):
                end = path.find("/", end + 1)
                if end < 0:
                    end = len(path)
                    break
            target = self.deep_paths.get(path[:end])
            if target is not None:
                return target
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
            return NOT_FOUND(environ, start_response)
        body = {
            "status": "ok",
            "tenants": self.counts(),
            # Which file this node serves: nodes that disagree have drifted apart.
            "tenants_file_sha256": self.tenant_set.tenants_file_sha256,
        }
        response = Response(json.dumps(body), mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response(environ, start_response)

    def snapshot(self) -> tuple[dict[str, str], set[str] | None]:
        """For the metrics: every tenant's state, and which changed since the last call
        (``None``: compare them all). Made again whole only for a new table or one that fell
        behind; else only the states that moved are applied: the metrics take one once a
        second, and its cost follows what changed, not the number of tenants."""
        with self._snapshot_lock:
            tenants, held = self.tenants, self.held
            if self._states_version == self.states.version:
                return self._states, set()
            moved, version = None, self.states.version  # (read before the states are)
            if self._states_version >= 0:
                moved, version = self.states.moved_since(self._states_version)
            if moved is None:  # the first view, or too far behind: made again whole
                states = {n: "maintenance" if n in held else h.state for n, h in tenants.items()}
                self._states, self._states_version = states, version
                return states, None
            changed = moved & tenants.keys()  # (a removed tenant's old handle moved too)
            for name in changed:
                self._states[name] = "maintenance" if name in held else tenants[name].state
            self._states_version = version
            return self._states, changed

    def counts(self) -> dict[str, int]:
        """Tenants per state, held ones counted as in maintenance: constant time per call."""
        counts = {state: self.states.counts[state] for state in STATES}
        for name in self.held:
            counts[self.tenants[name].state] -= 1
            counts["maintenance"] += 1
        return counts


def _nothing(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    return ()


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


def is_reserved(path: str) -> bool:
    """A path under the reserved prefix (``/_dispatcher`` or below it)."""
    return path == RESERVED_PREFIX or path.startswith(_RESERVED_FOLDER)


def is_hostile(path: str, raw_uri: str) -> bool:
    """A ``.``/``..`` segment, or an encoded slash in the raw URI, that could cross mounts."""
    if "/." in path and any(segment in (".", "..") for segment in path.split("/")):
        return True
    return "%" in raw_uri and "%2f" in raw_uri.partition("?")[0].lower()
