"""Out of the garbage collector's way: what a server keeps for its whole life.

A full collection walks every object the collector tracks, with every thread of the worker
stopped: over the tenant set and routing table of 100,000 tenants, or 1,000 built apps, that
is a pause of 0.1-0.2 s, and a busy worker runs one every few seconds. So what lives as long
as the server does (the tenant set and routing table, at boot and after each reload; each app
of a tenant that is never evicted, once built) is moved out of its way with ``gc.freeze()``
(:func:`freeze`).

``gc.freeze()`` moves *everything* tracked, so an app dropped later (a reload removed it, or
it was evicted) stays in memory as frozen garbage until :func:`reclaim` (unfreeze, one full
collection, freeze again), which the dispatcher runs, off the request path, once it has
counted enough such apps. :func:`freezes` counts the freezes: an app built before the last
one is frozen::

    built_at = freezes()          # when the app was built
    ...
    if built_at < freezes():      # dropped, and frozen since: count it for a reclaim
        frozen_garbage += 1

What is garbage when a freeze runs (a cycle a request just left) is frozen too: each freeze
outside a build counts as one more app's worth for the next reclaim.

Once a boot or a reload has settled, :func:`release_free_memory` gives the memory it used for
a moment back to the system.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: How many times this process froze (a lost increment between two threads does no harm:
#: the count is only compared with a value read before it).
_freezes = 0
#: :func:`paused` sections running now, and whether the collector ran before the first.
_pauses = 0
_was_enabled = True
_pause_lock = threading.Lock()
#: glibc's ``malloc_trim``; ``False`` where there is none; ``None`` until looked for.
_trim: Any = None


def freeze() -> None:
    """Move every object the collector tracks now out of its way, until :func:`reclaim`."""
    global _freezes
    gc.freeze()
    _freezes += 1


def freezes() -> int:
    """How many times :func:`freeze` ran in this process (and its parent before a fork)."""
    return _freezes


def kept(load: Callable[[], T]) -> T:
    """``load()``, for what the server keeps until the next reload (a tenant set), made with
    the collector paused and frozen with it. Loading a tenants file makes a few objects per
    line and no reference cycles: the collections it would trigger find nothing to free (a
    third of the boot at 100,000 tenants), and unfrozen, the first ones after it would walk
    all of it, twice (0.1-0.2 s more)."""
    with paused():
        loaded = load()
        freeze()
    return loaded


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No automatic collection meanwhile (``gc.disable()``, then as it was). Nests, also
    across threads: the last one out restores the collector."""
    global _pauses, _was_enabled
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``).

    Loading a large tenants file, and a worker's first flush of its metrics (a state for
    every tenant), use large blocks for a moment; once freed, the heap keeps their pages: about
    20 MiB of a worker's 187 at 100,000 tenants (1.4 ms, once). Nothing happens where the C
    library has no such call (musl). The call lets go of the interpreter lock meanwhile.
    """
    global _trim
    if _trim is None:
        try:
            _trim = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError):
            _trim = False
    if _trim:
        _trim(0)


def reclaim() -> float:
    """Free the garbage frozen so far: unfreeze, one full collection, freeze again. Returns
    the seconds it took (every thread of the process waits meanwhile)."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    freeze()
    return time.perf_counter() - started
