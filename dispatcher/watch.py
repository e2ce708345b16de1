"""Notice edits to tenants.yaml: the watcher says what changed, the dispatcher applies it.

:class:`FileWatcher` looks at the file's modification time, size and inode, and when they
moved, at its bytes: a ``touch`` or a rewrite with the same content changes nothing. A changed
file is loaded and validated; a valid one is returned, an invalid one is logged once (per
content) and the running tenants stay. :func:`compare` says what replacing one tenant set with
another does, tenant by tenant (the reload's log line, ``python -m dispatcher diff``)::

    watcher = FileWatcher(tenant_set)
    new = watcher.changed()          # None, or the new valid TenantSet
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from . import collector
from .loader import load_tenants
from .problems import ConfigError
from .tenant import TenantConfig, TenantSet, text_sha256
from .yamlfile import read_text

log = logging.getLogger("dispatcher")


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


def file_signature(path: str) -> tuple[int, int, int] | None:
    """What moves when a file is written or replaced (``None`` if it cannot be seen)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class FileWatcher:
    """Watches the tenants file a set was loaded from, for edits worth loading."""

    def __init__(self, tenant_set: TenantSet) -> None:
        self.file = tenant_set.file
        self.instance_root = tenant_set.instance_root
        # Not the file's signature now: it may have been edited since the set was read (a
        # worker builds its eager tenants in between). The first look reads the file, and
        # reloads only if its bytes are not the set's.
        self._seen: tuple[int, int, int] | None = None
        self._hash = tenant_set.tenants_file_sha256
        self._refused: str | None = None
        #: Whether the last look found an edit and refused it (it was not valid).
        self.refused = False

    def changed(self, force: bool = False) -> TenantSet | None:
        """The file's new tenant set if it was edited (re-read anyway with ``force``) and is
        valid; else ``None``. Cheap when nothing moved: one ``stat``."""
        self.refused = False
        signature = file_signature(self.file)
        if signature == self._seen and not force:
            return None
        self._seen = signature
        text, unreadable = read_text(self.file)  # bounded: the file may be hostile
        digest = text_sha256(text) if text is not None else None
        if not force and digest is not None and digest in (self._hash, self._refused):
            return None  # touched, or saved again unchanged: nothing to do
        try:
            if text is None:
                raise ConfigError([unreadable] if unreadable is not None else [])
            tenant_set = collector.kept(
                lambda: load_tenants(self.file, text=text, instance_root=self.instance_root)
            )
        except ConfigError as e:
            self._refused, self.refused = digest, True
            log.error(
                "%s changed but is not valid; still serving the previous tenants. Problems:\n%s",
                self.file,
                e,
            )
            return None
        self._hash, self._refused = digest or self._hash, None
        return tenant_set
