"""The instance folder's build lock across a fork (DESIGN 9): a child forked while its parent
builds a tenant must not keep the parent's lock, or its own builds of that tenant wait for ever
(a uWSGI master without lazy-apps forking its workers mid-build; tests/e2e/test_containment.py
runs that case under uWSGI)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from dispatcher import build


def can_lock(folder: Path) -> bool:
    with open(folder / build.BUILD_LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def test_a_child_forked_mid_build_lets_go_of_the_parents_lock(tmp_path: Path) -> None:
    with build._build_lock(str(tmp_path)):
        pid = os.fork()
        if pid == 0:  # the child: once the parent's build ends, the lock is free
            deadline = time.monotonic() + 10
            while not can_lock(tmp_path):
                if time.monotonic() > deadline:
                    os._exit(1)
                time.sleep(0.01)  # polling a lock the parent is about to release
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_process_that_took_the_lock_keeps_it(tmp_path: Path) -> None:
    # uWSGI calls its post-fork hook without forking, too (one process, no master).
    with build._build_lock(str(tmp_path)):
        build._drop_parents_locks()
        assert not can_lock(tmp_path)
    assert can_lock(tmp_path)
