"""The uWSGI API, when this process runs inside uWSGI.

uWSGI puts its ``uwsgi`` module into ``sys.modules`` before it loads the application; nothing
imports it from disk. ``import uwsgi`` is therefore not proof of running under uWSGI: outside
it, a folder named ``uwsgi`` anywhere on ``sys.path`` imports as an empty namespace package, and
the tenants file's folder is on ``sys.path`` (``rules.add_import_root``) while servers often keep
a ``uwsgi/`` folder of logs and sockets right beside it. So the module is looked up, never
imported, and must be uWSGI's own (no import spec, and its API).
"""

import os
import sys
from collections.abc import Callable
from typing import Any


def uwsgi_api() -> Any:
    """uWSGI's ``uwsgi`` module inside a uWSGI process, ``None`` anywhere else. (``Any``: the
    module is made in C and has no type stubs.)"""
    module = sys.modules.get("uwsgi")
    if module is None or module.__spec__ is not None or not hasattr(module, "masterpid"):
        return None
    return module


def on_fork_child(callback: Callable[[], None]) -> None:
    """Call ``callback`` in every child forked from this process from now on.

    uWSGI forks its workers in C (without ``lazy-apps``, after loading the app in the master):
    Python's ``os.register_at_fork`` hooks do not run there, its ``uwsgi.post_fork_hook`` does.
    Both are set, so ``callback`` may run twice in one child: it must be idempotent.
    """
    os.register_at_fork(after_in_child=callback)
    uwsgi = uwsgi_api()
    if uwsgi is None:
        return
    previous = getattr(uwsgi, "post_fork_hook", None)

    def post_fork() -> None:
        if previous is not None:
            previous()
        callback()

    uwsgi.post_fork_hook = post_fork
