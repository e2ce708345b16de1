"""One worker's metrics: which :class:`~dispatcher.metrics.Metrics` it writes to, and the
thread that writes them out every second.

Under uWSGI each worker has one, writing into its server's folder (see
:mod:`dispatcher.metrics_files`); elsewhere (the dev server, tests) each dispatcher has its
own, in memory::

    metrics = process_metrics(tenant_set.instance_root)
    Flusher(metrics, routes.snapshot).ensure_running()      # under uWSGI
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from . import metrics_files
from .metrics import Metrics

log = logging.getLogger("dispatcher")


_process: Metrics | None = None
_process_lock = threading.Lock()


def process_metrics(instance_root: str) -> Metrics:
    """This process's metrics. Under uWSGI one per worker, written to the server's folder
    (:mod:`dispatcher.metrics_files`); elsewhere a new in-memory one per call (each
    dispatcher of a test, or of the dev server, has its own)."""
    global _process
    with _process_lock:
        if _process is not None:
            return _process
        try:
            folder = metrics_files.use_server_folder(instance_root)
        except OSError as e:
            log.error(
                "cannot create the metrics folder (%s); this worker's metrics are its own "
                "only. Set %s to a writable folder",
                e,
                metrics_files.PARENT_VARIABLE,
            )
            folder = None
        if folder is None:
            return Metrics(None)
        _use_multiprocess_values()
        metrics_files.tidy(folder)  # a predecessor killed with -9 left its gauges behind
        _process = Metrics(folder)
        return _process


def _use_multiprocess_values() -> None:
    """prometheus-client picks its value class when first imported: if something imported
    it before the folder was set, switch it (only our metrics are created after this)."""
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


class Flusher:
    """A daemon thread that flushes a worker's metrics about once a second, so an idle
    worker's last requests are counted too (the request path's tick needs requests)."""

    def __init__(
        self, metrics: Metrics, snapshot: Callable[[], tuple[Mapping[str, int], Mapping[str, str]]]
    ) -> None:
        self.metrics = metrics
        self.snapshot = snapshot
        self.interval = 1.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def ensure_running(self) -> None:
        """Start the thread unless it runs (again after a fork: threads do not survive it)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.metrics.flush(*self.snapshot())
            except Exception:  # never let the figures stop: log and go on next second
                log.exception("flushing the metrics failed")
