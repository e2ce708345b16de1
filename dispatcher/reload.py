"""Live reload: pick up edits to tenants.yaml in every worker, without a restart.

Each worker's :class:`Reloader` looks at the file's modification time, size and inode at most
once a second, on a request, so it works the same under uWSGI (any number of processes, with or
without ``lazy-apps``), the dev server and tests, with no thread or signal of its own. When the
file changed it is loaded and validated beside the running set; a valid file is swapped in by
:meth:`dispatcher.routing.Dispatcher.swap`, an invalid one changes nothing and its problems are
logged, once per edit::

    dispatcher = Dispatcher(load_tenants("tenants.yaml"))   # watches the file
    # edit tenants.yaml: within a second, the next request sees the new tenants
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import yaml

from .holds import CHECK_INTERVAL, holds_folder
from .problems import ConfigError
from .spec import TenantSet, load_tenants
from .tenant import TenantConfig

if TYPE_CHECKING:
    from .routing import Dispatcher

log = logging.getLogger("dispatcher")

#: A copy, under the instance root, of the tenants file as the server last loaded it:
#: ``python -m dispatcher diff`` compares the edited file with it.
RUNNING_FILE = ".running-tenants.yaml"
#: Beside it, under uWSGI: the pid of the master whose workers served it (see
#: :func:`served_before`).
RUNNING_MASTER_FILE = ".running-tenants.master"


@dataclass(frozen=True)
class Changes:
    """What replacing one tenant set with another does, tenant by tenant (names, sorted)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.changed)} rebuilt, {len(self.unchanged)} unchanged"
        )


def compare(old: Mapping[str, TenantConfig], new: TenantSet) -> Changes:
    """Compare running tenants (enabled ones, by name) with a newly loaded set."""
    fresh = {t.name: t for t in new.enabled}
    return Changes(
        added=tuple(sorted(fresh.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - fresh.keys())),
        changed=tuple(sorted(n for n in fresh.keys() & old.keys() if fresh[n] != old[n])),
        unchanged=tuple(sorted(n for n in fresh.keys() & old.keys() if fresh[n] == old[n])),
    )


def record_running(tenant_set: TenantSet) -> None:
    """Keep a copy of the file being served, for ``diff``; atomic, and only if it changed.

    Written only into an instance root that exists: loading a file alone creates nothing.
    """
    if not os.path.isdir(tenant_set.instance_root):
        return
    master = _uwsgi_master_pid()
    for name, text in (
        (RUNNING_FILE, tenant_set.text),
        (RUNNING_MASTER_FILE, f"{master}\n" if master else None),
    ):
        path = os.path.join(tenant_set.instance_root, name)
        if text is None or _read(path) == text:
            continue
        temporary = f"{path}.{os.getpid()}.{threading.get_ident()}"
        try:
            with open(temporary, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(temporary, path)
        except OSError as e:  # a read-only instance root costs only `diff` its default
            log.warning("cannot record the running tenants file in %s: %s", path, e)


def served_before(file: str) -> TenantSet | None:
    """The tenant set this uWSGI server's workers served, for a worker it (re)spawns.

    A worker that is respawned (recycled, killed, chain-reloaded) after an invalid edit that
    the live reload refused must not fail to start, which with ``need-app`` would end the whole
    server: it serves what its siblings serve. Only for a master that recorded that copy
    itself; a fresh start with a bad file still fails.
    """
    master = _uwsgi_master_pid()
    if master is None:
        return None
    instance_root = os.path.join(os.path.dirname(os.path.abspath(file)), _instance_root(file))
    recorded = _read(os.path.join(instance_root, RUNNING_MASTER_FILE))
    text = _read(os.path.join(instance_root, RUNNING_FILE))
    if recorded != f"{master}\n" or text is None:
        return None
    try:
        return load_tenants(file, text=text)
    except ConfigError:  # e.g. an environment variable it needs is gone
        return None


def _instance_root(file: str) -> str:
    """The broken file's ``instance_root`` if it can still be read, else the default."""
    try:
        with open(file, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return "instance"
    value = data.get("instance_root") if isinstance(data, dict) else None
    return value if isinstance(value, str) else "instance"


def _uwsgi_master_pid() -> int | None:
    try:
        import uwsgi
    except ImportError:  # not running under uWSGI
        return None
    return int(uwsgi.masterpid()) or None


def running_text(tenant_set: TenantSet) -> str | None:
    """The tenants file as a server last loaded it, if one recorded it."""
    return _read(os.path.join(tenant_set.instance_root, RUNNING_FILE))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class Reloader:
    """Watches one dispatcher's tenants file and swaps in valid edits."""

    def __init__(self, dispatcher: Dispatcher, file: str, instance_root: str) -> None:
        self.dispatcher = dispatcher
        self.file = file
        self.holds_folder = holds_folder(instance_root)
        self._seen = _signature(file)
        self._holds_seen: object = object()  # never equal: the first look always lists
        self._next_check = time.monotonic() + CHECK_INTERVAL
        self._forced = False
        self._lock = threading.Lock()

    def due(self) -> bool:
        """True at most once per :data:`CHECK_INTERVAL` (cheap: called on every request)."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + CHECK_INTERVAL
        return True

    def request(self) -> None:
        """Reload on the next request even if the file looks unchanged (e.g. on SIGHUP)."""
        self._forced = True
        self._next_check = 0.0

    def check(self) -> None:
        """Apply edits to the file and changes to the holds folder (once per interval)."""
        self.reload_if_changed()
        self.check_holds()

    def check_holds(self) -> None:
        """Put the tenants named in the holds folder in maintenance, and only those."""
        holds = _signature(self.holds_folder)
        if holds != self._holds_seen:
            self._holds_seen = holds
            try:
                names = frozenset(os.listdir(self.holds_folder))
            except OSError:
                names = frozenset()
            self.dispatcher.hold(names)

    def reload_if_changed(self) -> bool:
        """Load the file if it changed and swap it in; ``True`` if the tenants were replaced.

        Only one thread of a worker reloads at a time; the others go on serving the running
        set meanwhile rather than wait.
        """
        signature = _signature(self.file)
        if signature == self._seen and not self._forced:
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._seen, self._forced = signature, False
            return self._reload()
        finally:
            self._lock.release()

    def _reload(self) -> bool:
        running = {name: handle.tenant for name, handle in self.dispatcher.tenants.items()}
        started = time.perf_counter()
        try:
            tenant_set = load_tenants(self.file)
        except ConfigError as e:
            log.error(
                "%s changed but is not valid; still serving the previous tenants. Problems:\n%s",
                self.file,
                e,
            )
            self.dispatcher.metrics.reload(False, time.perf_counter() - started)
            return False
        changes = compare(running, tenant_set)
        self.dispatcher.swap(tenant_set)
        elapsed = time.perf_counter() - started
        self.dispatcher.metrics.reload(True, elapsed)
        log.info("reloaded %s in %.0f ms: %s", self.file, elapsed * 1000, changes)
        return True
