"""Per-tenant metrics of one worker, summed over the node's workers by every scrape.

DESIGN section 11 names the metrics. The request path pays for one ``deque.append`` per request
(of an :class:`Answered`, :meth:`Metrics.observe`); :meth:`Metrics.flush`, about once a second
off the request path, adds the pending requests up and writes them into prometheus-client, whose
multiprocess mode (under uWSGI, see :mod:`dispatcher.metrics_files`) keeps each worker's figures
in files that :meth:`Metrics.render` sums (the tenant states, a series per tenant, are kept by
:mod:`dispatcher.metrics_states` instead). Label values come only from the tenants file (the
tenant names ``flush`` is given) and from fixed sets: a status outside 100-599 counts as
``5xx``, so no request and no app can create a series::

    metrics = Metrics(folder)                  # one per worker: dispatcher.metrics_worker
    metrics.observe("acme", 200, 0.012)        # request thread: one deque.append
    metrics.flush({"acme": "ready"})           # once a second and before a scrape
"""

from __future__ import annotations

import bisect
import collections
import itertools
import logging
import subprocess
import threading
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import metrics_files, metrics_render, metrics_states

if TYPE_CHECKING:
    from prometheus_client import Histogram
    from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("dispatcher")

STATES = metrics_states.STATES
CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
#: What a status outside 100-599 (say, 999 from a broken app) counts as.
UNKNOWN_STATUS_CLASS = "5xx"
REASONS = ("concurrency",)
#: Request durations, in seconds, up to uwsgi.ini's harakiri (30 s).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BUILD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Every metric a scrape shows (histograms add ``_bucket``, ``_sum`` and ``_count``).
METRIC_NAMES = (
    "dispatcher_requests_total",
    "dispatcher_request_duration_seconds",
    "dispatcher_requests_in_flight",
    "dispatcher_tenant_state",
    "dispatcher_rejected_total",
    "dispatcher_builds_total",
    "dispatcher_build_duration_seconds",
    "dispatcher_reloads_total",
    "dispatcher_reload_duration_seconds",
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def code_class(status: int | str) -> str:
    """``200`` or ``"200 OK"`` -> ``"2xx"``; anything not a status 100-599 -> ``"5xx"``."""
    if isinstance(status, str):
        digits = status[:3]
        if not (digits.isascii() and digits.isdigit()) or status[3:4] not in ("", " "):
            return UNKNOWN_STATUS_CLASS
        status = int(digits)
    if isinstance(status, int) and 100 <= status <= 599:
        return CODE_CLASSES[status // 100 - 1]
    return UNKNOWN_STATUS_CLASS


class Answered:
    """One request, as the request path leaves it for :meth:`Metrics.flush`: recorded when
    it reaches its tenant, ``ended`` set when its app returns. Until then it is one of the
    tenant's requests in flight, so no flush needs to look at every tenant to find them.

    Slotted, no ``__init__``, the time not subtracted yet: the dispatcher fills in one per
    request (its ``start_response`` wrapper is one of these), so each instruction counts.
    """

    __slots__ = ("ended", "started", "status", "tenant")
    tenant: str
    #: As the app answered it: the WSGI status line (``"200 OK"``), or a number. Unset if
    #: it never answered (it raised): that is a 500.
    status: int | str
    #: ``time.perf_counter()`` when the request reached its tenant, and when its app returned
    #: (unset until then).
    started: float
    ended: float


class Metrics:
    """One process's metrics: the request path appends, :meth:`flush` writes them out.

    ``folder``: the server's multiprocess folder (uWSGI), or ``None`` for figures kept in
    this object alone (dev server, tests). Thread-safe: ``observe`` and ``rejected`` are single
    ``deque.append`` calls (atomic); one flush runs at a time.
    """

    def __init__(self, folder: str | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.folder = folder
        self._pending: collections.deque[Answered] = collections.deque()
        #: The request path's call: ``record(answered)``, a C-level ``deque.append`` (a few
        #: hundred instructions; :meth:`observe` is the same, named).
        self.record = self._pending.append
        self._rejections: collections.deque[tuple[str, str]] = collections.deque()
        self._flush_lock = threading.Lock()
        #: In multiprocess mode a scrape reads the files; else this object's own registry.
        self.registry: CollectorRegistry | None = None if folder else CollectorRegistry()
        registry = self.registry
        self._requests = Counter(
            "dispatcher_requests",
            "Requests answered, by tenant and status class (rejected ones included).",
            ["tenant", "code"],
            registry=registry,
        )
        self._duration = Histogram(
            "dispatcher_request_duration_seconds",
            "Time from a request's arrival at its tenant until its app returned the response.",
            ["tenant"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._in_flight = Gauge(
            "dispatcher_requests_in_flight",
            "Requests of the tenant being answered now, summed over the node's workers.",
            ["tenant"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        #: A series per tenant: not prometheus-client's children (see metrics_states).
        self._states = metrics_states.state_series(folder)
        if registry is not None:
            registry.register(self._states)  # type: ignore[arg-type]
        self._rejected = Counter(
            "dispatcher_rejected",
            "Requests refused with 503 before reaching the tenant's app, by reason.",
            ["tenant", "reason"],
            registry=registry,
        )
        self._builds = Counter(
            "dispatcher_builds",
            "Tenant app builds, by result (ok, failed).",
            ["tenant", "result"],
            registry=registry,
        )
        self._build_duration = Histogram(
            "dispatcher_build_duration_seconds",
            "Time taken to build a tenant's app.",
            ["tenant"],
            buckets=BUILD_BUCKETS,
            registry=registry,
        )
        self._reloads = Counter(
            "dispatcher_reloads",
            "Live reloads of the tenants file, by result (ok, failed).",
            ["result"],
            registry=registry,
        )
        self._reload_duration = Histogram(
            "dispatcher_reload_duration_seconds",
            "Time taken to load and swap in an edited tenants file.",
            buckets=BUILD_BUCKETS,
            registry=registry,
        )
        #: Tenants of an earlier view that the last one compared whole no longer names (a
        #: reload removed them): their requests still count. (Not a set of every tenant ever
        #: named: 4 MiB at 100,000 tenants.)
        self._removed: set[str] = set()
        self._written_in_flight: dict[str, int] = {}
        self._written_state: dict[str, str] = {}
        #: The ``states`` (a routing table's view) last compared whole: ``changed`` is
        #: relative to it; from another one, everything is compared.
        self._view: Mapping[str, str] | None = None
        #: Observations for a tenant no tenants file named (never expected; never a series).
        self.dropped = 0

    # -- The request path ------------------------------------------------------------------

    def observe(self, tenant: str, status: int | str, seconds: float) -> None:
        """One answered request: ``status`` as an int or the WSGI status line (``"200 OK"``)."""
        answered = Answered()
        answered.tenant, answered.status = tenant, status
        answered.started, answered.ended = 0.0, seconds
        self._pending.append(answered)

    def rejected(self, tenant: str, reason: str) -> None:
        """A request refused before reaching the app (``reason``: one of :data:`REASONS`)."""
        self._rejections.append((tenant, reason))

    # -- Rare events, written at once --------------------------------------------------------

    def build(self, tenant: str, ok: bool, seconds: float) -> None:
        """A build of the tenant's app finished (``ok``) or failed."""
        self._builds.labels(tenant, "ok" if ok else "failed").inc()
        self._build_duration.labels(tenant).observe(seconds)

    def reload(self, ok: bool, seconds: float) -> None:
        """A live reload of the tenants file was applied (``ok``) or refused."""
        self._reloads.labels("ok" if ok else "failed").inc()
        if ok:
            self._reload_duration.observe(seconds)

    # -- Once a second, off the request path -------------------------------------------------

    def flush(self, states: Mapping[str, str], changed: Collection[str] | None = None) -> None:
        """Write out what happened since the last flush, and the current gauges.

        ``states`` names every tenant being served (tenant -> one of :data:`STATES`);
        ``changed`` the tenants whose state may differ from the last flush's ``states``
        (``None``: any may, the set of tenants too): with 100,000 tenants, comparing them all
        every second would take milliseconds of this worker's interpreter lock. The requests
        in flight are the recorded ones not ended yet.
        """
        with self._flush_lock:
            if states is not self._view:  # another table's view (a reload): compare all
                changed = None
            if changed is None:
                self._removed.update(t for t in self._written_state if t not in states)
            try:
                in_flight = self._write_requests(states)
                self._write_rejections(states)
                self._write_gauges(in_flight, states, changed)
            except BaseException:  # (a metrics file that could not be written, say)
                self._view = None  # the changes taken are not all written: compare all next
                raise

    def _write_requests(self, states: Mapping[str, str]) -> dict[str, int]:
        """Add up the ended requests; the ones still in flight, per tenant, wait for the next
        flush. Only tenants of a view count: ``states``, or one a reload removed."""
        pending = self._pending
        counts: collections.Counter[tuple[str, int | str]] = collections.Counter()
        buckets: dict[str, list[float]] = {}
        in_flight: collections.Counter[str] = collections.Counter()
        waiting: list[Answered] = []
        removed = self._removed
        try:
            for _ in range(len(pending)):  # only what is there now: appends go on meanwhile
                answered = pending.popleft()
                tenant, ended = answered.tenant, getattr(answered, "ended", None)
                if ended is None:  # in flight: counted once it has ended
                    waiting.append(answered)
                    # (else a table this flush has not seen yet names it: it waits)
                    if tenant in states or tenant in removed:
                        in_flight[tenant] += 1
                    continue
                if tenant not in states and tenant not in removed:
                    self.dropped += 1
                    continue
                status, seconds = getattr(answered, "status", 500), ended - answered.started
                counts[tenant, status] += 1
                figures = buckets.get(tenant)
                if figures is None:  # a count per bucket (the last: above the highest) + sum
                    figures = buckets[tenant] = [0.0] * (len(REQUEST_BUCKETS) + 2)
                figures[bisect.bisect_left(REQUEST_BUCKETS, seconds)] += 1
                figures[-1] += seconds
        finally:  # what is still in flight is never lost, whatever fails below
            pending.extend(waiting)
        classes: collections.Counter[tuple[str, str]] = collections.Counter()
        for (tenant, status), n in counts.items():
            classes[tenant, code_class(status)] += n
        for (tenant, code), n in classes.items():
            self._requests.labels(tenant, code).inc(n)
        for tenant, figures in buckets.items():
            _add_to_histogram(self._duration.labels(tenant), figures)
        return in_flight

    def _write_rejections(self, states: Mapping[str, str]) -> None:
        pending = self._rejections
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for _ in range(len(pending)):
            tenant, reason = pending.popleft()
            if (tenant in states or tenant in self._removed) and reason in REASONS:
                counts[tenant, reason] += 1
            else:
                self.dropped += 1
        for (tenant, reason), n in counts.items():
            self._rejected.labels(tenant, reason).inc(n)

    def _write_gauges(
        self,
        in_flight: Mapping[str, int],
        states: Mapping[str, str],
        changed: Collection[str] | None,
    ) -> None:
        """Write only what changed: a series is created when it first becomes non-zero."""
        written = self._written_in_flight
        for tenant in [t for t in written if t not in in_flight or t not in states]:
            self._in_flight.labels(tenant).set(0)  # finished, or removed by a reload
            del written[tenant]
        for tenant, n in in_flight.items():
            if written.get(tenant, 0) != n and tenant in states:
                self._in_flight.labels(tenant).set(n)
                written[tenant] = n
        before = self._written_state
        moves: list[metrics_states.Change] = []
        if changed is not None:
            for tenant in changed:
                state, old = states.get(tenant), before.get(tenant)
                if state != old:
                    if old is not None:
                        moves.append((tenant, old, 0))
                    if state in STATES:
                        moves.append((tenant, state, 1))
                        before[tenant] = state
                    else:
                        before.pop(tenant, None)
            self._states.write(moves, before)
            return
        # One copy (in C, atomic): what is written is what is remembered, though a snapshot
        # may change the view meanwhile (it then names what it changed to a later flush).
        current = dict(states)
        if current != before:  # (lazily: a worker's first flush writes 100,000 states)
            gone = ((t, s, 0) for t, s in before.items() if current.get(t) != s)
            new = ((t, s, 1) for t, s in current.items() if s in STATES and before.get(t) != s)
            self._written_state = {t: s for t, s in current.items() if s in STATES}
            self._states.write(itertools.chain(gone, new), self._written_state)
        else:
            self._states.write((), before)
        self._view = states

    # -- Scrapes -----------------------------------------------------------------------------

    def render(
        self, states: Mapping[str, str], changed: Collection[str] | None = None
    ) -> tuple[bytes, str]:
        """Flush, then the node's figures (every worker's, added up) in Prometheus' format.

        Under uWSGI the files are added up in a child process (:mod:`.metrics_render`), so
        the scrape does not hold this worker's interpreter lock while it runs.
        """
        from prometheus_client import generate_latest

        self.flush(states, changed)
        if self.folder is None:
            assert self.registry is not None
            return generate_latest(_WithoutCreated(self.registry)), CONTENT_TYPE
        metrics_files.tidy(self.folder)
        try:
            return metrics_render.render_in_child(self.folder), CONTENT_TYPE
        except (OSError, subprocess.SubprocessError) as e:
            stderr = getattr(e, "stderr", b"") or b""
            log.error(
                "adding up the metrics in a child process failed (%s); adding them up in this "
                "worker instead. %s",
                e,
                stderr.decode(errors="replace")[-2000:],
            )
            return metrics_render.render_folder(self.folder), CONTENT_TYPE


def _add_to_histogram(child: Histogram, figures: list[float]) -> None:
    """Add per-bucket counts and a sum to one histogram child in one write per bucket.

    prometheus-client (pinned) has no public call for "n observations at once"; its
    ``observe`` would write its files once per request. Its per-bucket values are used
    directly; ``test_metrics.py`` checks the result against ``observe``.
    """
    counts, total = figures[:-1], figures[-1]
    buckets: list[Any] = child._buckets
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)
    child._sum.inc(total)


class _WithoutCreated:
    """A registry's samples without ``*_created``: a single process shows what the
    multiprocess mode shows (which has no creation times)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        for metric in self.registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric
