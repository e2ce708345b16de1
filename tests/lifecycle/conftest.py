"""Fixtures of the backup, restore, archive and clone tests (helpers are in :mod:`.helpers`)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .helpers import SQLITE_TENANTS, Tenants

WriteTenants = Callable[..., Path]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``small_disk(bytes)``: a folder on a tmpfs of that size, unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except OSError as e:
            pytest.skip(f"cannot mount a small tmpfs here ({e}); the ENOSPC tests above cover it")
        if done.returncode != 0:
            reason = done.stderr.strip() or "mount failed"
            pytest.skip(f"cannot mount a small tmpfs here ({reason}); see the ENOSPC tests")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False, timeout=10)


@pytest.fixture
def tenants(write_tenants: WriteTenants) -> Iterator[Tenants]:
    """The SQLite echo tenants, served in-process (their pools closed afterwards)."""
    served = Tenants(write_tenants(SQLITE_TENANTS))
    yield served
    served.close()
