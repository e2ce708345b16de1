"""How many requests of one tenant a worker runs at once (DESIGN section 11).

A uWSGI worker has a fixed number of threads. If one tenant's requests hang, they would take
every thread and every other tenant would wait. So each tenant may have at most N requests in
flight per worker, N from ``limits: {concurrent: N}`` (tenant, then ``defaults``), else the
worker's threads minus one: whatever one tenant does, each worker keeps a thread for the
others. One more request is answered 503 with ``Retry-After`` at once::

    limit = concurrency_limit(tenant.max_concurrent, worker_threads())   # None: no limit

A single-threaded worker gets no default limit (threads - 1 would be 0: it could serve
nothing), and neither does a server without a fixed pool of threads (the dev server starts one
thread per request, so one tenant cannot take the threads another needs).
"""

from __future__ import annotations

import functools

from .uwsgi_api import uwsgi_api

#: ``Retry-After`` of a request refused because its tenant has too many in flight: a hanging
#: neighbour is the tenant's own; trying again a second later is cheap for everyone.
RETRY_AFTER = 1


@functools.cache
def worker_threads() -> int | None:
    """The threads of this uWSGI worker; ``None`` outside uWSGI (no fixed pool of threads)."""
    uwsgi = uwsgi_api()
    if uwsgi is None:
        return None
    # uwsgi.opt["threads"] is a list when the option is given twice (ini and command line);
    # uwsgi.cores is what the worker actually runs: one core per thread.
    cores = int(getattr(uwsgi, "cores", 1) or 1)
    return max(cores, 1)


def concurrency_limit(configured: int | None, threads: int | None) -> int | None:
    """The tenant's limit: its own, else ``threads - 1``; ``None`` means no limit."""
    if configured is not None:
        return configured
    if threads is None or threads <= 1:
        return None
    return threads - 1
