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
from .uwsgi_api import on_fork_child, uwsgi_api

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
        self.pid = 0
        if not _in_uwsgi_master():  # there, the workers start theirs as they are forked
            self.start()
        _restart_after_fork(self)

    def start(self) -> None:
        self.pid = os.getpid()
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


def _in_uwsgi_master() -> bool:
    """Whether uWSGI loads the app before it has workers (no ``lazy-apps``): in a master, a
    thread would reload and build in a process that serves nothing. (Without a master the
    process becomes worker 1 next; uWSGI's post-fork hook starts the thread there too.)"""
    uwsgi = uwsgi_api()
    return uwsgi is not None and uwsgi.worker_id() == 0


def _restart_after_fork(ticker: Ticker) -> None:
    """A forked child (a uWSGI worker without lazy-apps) has none of its parent's threads:
    start one in each."""
    ref = weakref.ref(ticker)

    def restart() -> None:
        found = ref()
        # Both hooks may run for one fork: start one thread per process. (Not
        # ``thread.is_alive()``: after uWSGI's fork in C, Python still takes the parent's
        # thread for alive.)
        if found is not None and not found.stopped and found.pid != os.getpid():
            found.start()

    on_fork_child(restart)
