"""The background thread of a dispatcher: :meth:`Dispatcher.tick` once a second, per process.

Under uWSGI each worker process has its own (started again in a forked child, even when uWSGI
forks in C without Python's fork hooks), as has the dev server and every dispatcher of a test
made with ``background=True``. It holds its dispatcher weakly and ends with it::

    ticker = Ticker(dispatcher)      # dispatcher.tick() within a second, and every second
    ticker.wake.set()                # ... now (SIGHUP)
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING

from .holds import CHECK_INTERVAL

if TYPE_CHECKING:
    from .dispatch import Dispatcher

log = logging.getLogger("dispatcher")


class Ticker:
    """The background thread of one dispatcher in one process: :meth:`Dispatcher.tick`, once
    a second. It holds the dispatcher weakly and ends when the dispatcher is gone or closed."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = weakref.ref(dispatcher)
        self.wake = threading.Event()
        self.stopped = False
        self.start()
        _restart_after_fork(self)

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="dispatcher ticks", daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            self.wake.wait(CHECK_INTERVAL)
            self.wake.clear()
            dispatcher = self.dispatcher()
            if dispatcher is None or self.stopped:
                return
            try:
                dispatcher.tick()
            except BaseException:  # the ticks must go on, whatever one of them met
                log.exception("the dispatcher's background check failed; trying again")
            del dispatcher

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()


def _restart_after_fork(ticker: Ticker) -> None:
    """A forked child (a uWSGI worker without lazy-apps) has none of its parent's threads."""
    ref = weakref.ref(ticker)

    def restart() -> None:
        found = ref()
        # Both hooks may run for one fork: start one thread, in a child that has none.
        if found is not None and not found.stopped and not found.thread.is_alive():
            found.start()

    os.register_at_fork(after_in_child=restart)
    try:  # uWSGI forks its workers in C: os.register_at_fork does not see it
        import uwsgi
    except ImportError:
        return
    previous = getattr(uwsgi, "post_fork_hook", None)

    def post_fork() -> None:
        if previous is not None:
            previous()
        restart()

    uwsgi.post_fork_hook = post_fork
