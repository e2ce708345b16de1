"""Maintenance holds: a tenant answers 503 on every worker while an operator's command works.

``migrate``, ``copy-db``, ``restore``, ``clone`` and ``archive`` hold the tenant they change::

    with held(tenant_set, "acme", "migrating"):
        upgrade_to_head(app)      # every worker answers 503 for acme, none has its app open

A hold is *acknowledged*: :func:`held` puts it, then waits until every live worker has seen it
and let go of the tenant (no request of it in flight, its app dropped and pools closed), and
on release waits until every worker has taken it back, so when the command returns every
worker serves what the command left (a restored database, a new schema). Workers see holds and
report what they let go of on their once-a-second background tick.

Where holds live is a :class:`HoldStore`: by default a folder under the instance root
(:class:`FolderHolds`: one file per held tenant, one per worker), shared by the workers of the
servers on that machine; with ``control_database:`` a PostgreSQL database shared by every node
of a fleet (:mod:`dispatcher.control`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from itertools import count
from typing import TYPE_CHECKING, Protocol

from .errors import DispatcherError
from .watch import file_signature

if TYPE_CHECKING:
    from .tenant import TenantSet

log = logging.getLogger("dispatcher")

#: A folder under the instance root: a file named after a tenant in it holds that tenant.
HOLDS_FOLDER = ".maintenance"
#: Seconds between two looks at the holds, per worker.
CHECK_INTERVAL = 1.0
#: A worker that has not reported for this long is gone (killed, or its machine is).
LIVE_SECONDS = 10.0
#: How long a hold waits for the workers to let go of a tenant: longer than uWSGI's harakiri
#: (30 s), so a request in flight finishes or is killed before the command gives up.
HOLD_TIMEOUT = 35.0
#: How long a release waits for the workers to serve the tenant again.
RELEASE_TIMEOUT = 10.0

_workers = count()


class HoldError(DispatcherError):
    """A hold could not be taken: nothing was changed, and the hold was released."""


class HoldStore(Protocol):
    """Where the holds and the workers' reports of one deployment live."""

    def held(self) -> frozenset[str]:
        """The tenants held now."""

    def report(self, worker: str, drained: frozenset[str]) -> None:
        """A worker is alive and has let go of these held tenants."""

    def forget(self, worker: str) -> None:
        """A worker stops (its report goes)."""

    def workers(self) -> dict[str, frozenset[str]]:
        """The live workers, with the held tenants each has let go of."""

    def put(self, name: str, why: str) -> None:
        """Hold a tenant."""

    def release(self, name: str) -> None:
        """Release a tenant's hold."""

    def exclusive(self, name: str) -> contextlib.AbstractContextManager[None]:
        """One holder of a tenant at a time: a second one waits for the first."""

    def close(self) -> None:
        """Let go of what the store holds open (a connection)."""


def store_for(tenant_set: TenantSet) -> HoldStore:
    """The deployment's hold store: the control database if the file names one."""
    if tenant_set.control_database is not None:
        from .control import DatabaseHolds

        return DatabaseHolds(tenant_set.control_database)
    return FolderHolds(tenant_set.instance_root)


def worker_name() -> str:
    """A name for one dispatcher of one process, unique across machines."""
    return f"{socket.gethostname()}-{os.getpid()}-{next(_workers)}"


@contextlib.contextmanager
def held(tenant_set: TenantSet, name: str, why: str = "maintenance") -> Iterator[None]:
    """Hold tenant ``name`` for the duration of the block, acknowledged by every worker.

    Raises :class:`HoldError` (releasing the hold) if a worker does not let go of the tenant
    within :data:`HOLD_TIMEOUT`. With no server running, there is nothing to wait for.
    """
    store = store_for(tenant_set)
    with contextlib.closing(store), store.exclusive(name):
        store.put(name, why)
        try:
            _wait(store, lambda drained: name in drained, HOLD_TIMEOUT, name)
            yield
        finally:
            store.release(name)
            with contextlib.suppress(HoldError):  # serving again is the workers' next tick
                _wait(store, lambda drained: name not in drained, RELEASE_TIMEOUT, name)


def _wait(
    store: HoldStore, done: Callable[[frozenset[str]], bool], timeout: float, name: str
) -> None:
    """Poll the workers' reports until ``done`` holds for every live worker."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = sorted(w for w, drained in store.workers().items() if not done(drained))
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise HoldError(
                f"tenant '{name}': {len(waiting)} worker(s) did not let go of it within "
                f"{timeout:.0f} s ({', '.join(waiting[:3])}); a request of it may be stuck. "
                "Nothing was changed; try again, or restart those workers"
            )
        time.sleep(0.05)


class FolderHolds:
    """Holds as files under the instance root, for the servers of one machine.

    ``.maintenance/<tenant>`` holds a tenant (an operator may create one by hand);
    ``.maintenance/.workers/<worker>`` is a worker's report (its modification time the
    heartbeat, its content what it let go of); ``.maintenance/.locks/<tenant>`` is flocked by
    the holder.
    """

    def __init__(self, instance_root: str) -> None:
        self.instance_root = instance_root
        self.folder = os.path.join(instance_root, HOLDS_FOLDER)
        self.reports = os.path.join(self.folder, ".workers")
        self._seen: object = object()  # never equal: the first look always lists
        self._held: frozenset[str] = frozenset()
        self._reported: dict[str, frozenset[str]] = {}

    def held(self) -> frozenset[str]:
        signature = file_signature(self.folder)  # one stat when nothing changed
        if signature != self._seen:
            self._seen = signature
            try:
                names = os.listdir(self.folder)
            except OSError:
                names = []
            self._held = frozenset(n for n in names if not n.startswith("."))
        return self._held

    def report(self, worker: str, drained: frozenset[str]) -> None:
        if not os.path.isdir(self.instance_root):
            return  # nothing served from here yet: nothing to create
        path = os.path.join(self.reports, worker)
        if self._reported.get(worker) == drained:
            with contextlib.suppress(FileNotFoundError):
                os.utime(path)  # the heartbeat
                return
        os.makedirs(self.reports, mode=0o700, exist_ok=True)
        content = {"drained": sorted(drained), "host": socket.gethostname(), "pid": os.getpid()}
        temporary = f"{path}.tmp"
        with open(temporary, "w") as f:
            json.dump(content, f)
        os.replace(temporary, path)
        self._reported[worker] = drained

    def forget(self, worker: str) -> None:
        self._reported.pop(worker, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.reports, worker))

    def workers(self) -> dict[str, frozenset[str]]:
        found: dict[str, frozenset[str]] = {}
        try:
            with os.scandir(self.reports) as listing:
                entries = list(listing)
        except OSError:
            return found
        here, now = socket.gethostname(), time.time()
        for entry in entries:
            if entry.name.endswith(".tmp"):
                continue
            try:
                if now - entry.stat().st_mtime > LIVE_SECONDS:
                    continue
                with open(entry.path) as f:
                    content = json.load(f)
            except (OSError, ValueError):
                continue  # gone, or being replaced: its next report counts
            if content.get("host") == here and not process_alive(content.get("pid", 0)):
                continue  # killed without a word: its file stays until the folder is reused
            found[entry.name] = frozenset(content.get("drained", ()))
        return found

    def put(self, name: str, why: str) -> None:
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        with open(os.path.join(self.folder, name), "w") as f:
            f.write(f"{why}, pid {os.getpid()}\n")

    def release(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.folder, name))

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        locks = os.path.join(self.folder, ".locks")
        os.makedirs(locks, mode=0o700, exist_ok=True)
        with open(os.path.join(locks, name), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file is closed
            yield

    def close(self) -> None:
        pass


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (someone else's counts)."""
    if pid <= 0:  # kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
