"""One worker's metrics: which :class:`~dispatcher.metrics.Metrics` it writes to (the
dispatcher's background thread flushes them every second).

Under uWSGI each worker has one, writing into its server's folder (see
:mod:`dispatcher.metrics_files`); elsewhere (the dev server, tests) each dispatcher has its
own, in memory::

    metrics = process_metrics(tenant_set.instance_root)
"""

from __future__ import annotations

import logging
import threading

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
