"""Maintenance holds: a tenant answers 503 on every worker while an operator's command works.

A hold is a file named after the tenant in ``<instance_root>/.maintenance/``: every worker of
every server on that instance root looks at the folder at least once a second and answers 503
with ``Retry-After`` for the tenants named there (``migrate``, ``copy-db`` and ``restore`` hold
the tenant they change)::

    with held(tenant_set, "acme", "migrating"):
        upgrade_to_head(app)          # no request reaches acme's app meanwhile
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spec import TenantSet

from .watch import file_signature

#: A folder under the instance root: a file named after a tenant in it holds that tenant.
HOLDS_FOLDER = ".maintenance"
#: Seconds between two looks at the holds folder, per worker.
CHECK_INTERVAL = 1.0


def holds_folder(instance_root: str) -> str:
    """The folder whose file names are the held tenants."""
    return os.path.join(instance_root, HOLDS_FOLDER)


def held_names(instance_root: str) -> frozenset[str]:
    """The tenants held right now."""
    try:
        return frozenset(os.listdir(holds_folder(instance_root)))
    except OSError:
        return frozenset()


class HoldsWatcher:
    """Notices holds put or released: lists the folder only when it changed."""

    def __init__(self, instance_root: str) -> None:
        self.folder = holds_folder(instance_root)
        self._seen: object = object()  # never equal: the first look always lists

    def changed(self) -> frozenset[str] | None:
        """The held tenants if they may have changed since the last call, else ``None``."""
        signature = file_signature(self.folder)
        if signature == self._seen:
            return None
        self._seen = signature
        return held_names(os.path.dirname(self.folder))


@contextlib.contextmanager
def held(tenant_set: TenantSet, name: str, why: str = "maintenance") -> Iterator[None]:
    """Put a tenant in maintenance (503) on every worker for the duration of the block.

    Workers look at the holds folder at most once a second, on a request; waiting a little
    longer than that before going on means no request reaches the app once the block runs.
    """
    folder = holds_folder(tenant_set.instance_root)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    marker = os.path.join(folder, name)
    with open(marker, "w") as f:
        f.write(f"{why}, pid {os.getpid()}\n")
    try:
        time.sleep(CHECK_INTERVAL + 0.2)
        yield
    finally:
        os.unlink(marker)
