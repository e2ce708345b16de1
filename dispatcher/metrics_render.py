"""Add up a uWSGI server's metrics files in a process of its own, for a scrape.

prometheus-client merges the workers' files in pure Python: about 0.1 s per 1,000 series here
(200 busy tenants: ~4,000 series). Done in the worker that answers the scrape, that would hold
its interpreter lock, and so slow its other threads' requests, for that long. So the worker
runs this module as a child process and only waits for its output::

    body = render_in_child("/srv/app/instance/.metrics/1234-1700000000")
    # or: python -m dispatcher.metrics_render FOLDER   (the text on stdout)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import metrics_files, metrics_states

#: The project folder (the one holding ``dispatcher/``), for the child's import path.
_PROJECT = str(Path(__file__).resolve().parent.parent)


def render_folder(folder: str) -> bytes:
    """Every worker's figures in ``folder``, added up, in Prometheus' text format."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    registry.register(_WithoutStateFiles(MultiProcessCollector(None, path=folder)))
    registry.register(metrics_states.StateLogs(folder))
    with metrics_files.locked(folder, exclusive=False):
        return generate_latest(registry)


class _WithoutStateFiles:
    """The workers' files, less ``dispatcher_tenant_state`` (its logs are read instead): a
    worker of an earlier version, still running during a chain reload, wrote it there."""

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Any]:
        for metric in self.collector.collect():
            if metric.name != metrics_states.NAME:
                yield metric


def python() -> str:
    """This interpreter's program. Under uWSGI ``sys.executable`` is uWSGI itself; the
    environment's ``bin/python3`` (the virtualenv's, with its packages) is the one to run."""
    if os.path.basename(sys.executable).startswith("python"):
        return sys.executable
    candidate = os.path.join(sys.exec_prefix, "bin", "python3")
    if os.access(candidate, os.X_OK):
        return candidate
    return getattr(sys, "_base_executable", None) or "python3"


def render_in_child(folder: str, timeout: float = 20.0) -> bytes:
    """:func:`render_folder` in a child process, given less time than uwsgi.ini's harakiri;
    ``CalledProcessError``, ``TimeoutExpired`` or ``OSError`` if it fails (the caller may
    then render in-process)."""
    path = os.pathsep.join(p for p in (_PROJECT, os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [python(), "-m", "dispatcher.metrics_render", folder],
        capture_output=True,
        timeout=timeout,
        check=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    return done.stdout


if __name__ == "__main__":
    sys.stdout.buffer.write(render_folder(sys.argv[1]))
