"""The folder where a uWSGI server's workers keep their metrics, and its upkeep.

uWSGI workers share no memory, so prometheus-client's multiprocess mode has each worker write
its figures to memory-mapped files in one folder (``PROMETHEUS_MULTIPROC_DIR``), and a scrape
adds up every file. Its documentation asks for three things, done here for uWSGI:

- the variable is set before ``prometheus_client`` is imported (:func:`use_server_folder`);
- the folder is empty when the server starts: each server start gets a new folder,
  ``<DISPATCHER_METRICS_DIR or instance_root/.metrics>/<master pid>-<start time>``, which
  survives worker respawns and chain reloads (same master, same start time) and replaces the
  folders of servers that are gone;
- a dead worker's live gauges (in flight; its log of tenant states, see
  :mod:`dispatcher.metrics_states`) are removed (``mark_process_dead``): uWSGI's
  master runs no Python, so the workers do it for it, at start and before every scrape, for
  every pid the master no longer lists (:func:`tidy`). The dead worker's counters are merged
  into one archive file at the same time, so the count stays exact and the number of files
  stays small however often workers are recycled::

    folder = use_server_folder("/srv/app/instance")   # None outside uWSGI
    tidy(folder)                                      # at worker start and before a scrape
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import re
import shutil
from collections.abc import Iterator

from .holds import process_alive
from .uwsgi_api import uwsgi_api

log = logging.getLogger("dispatcher")

#: An operator's parent folder for the servers' metrics folders (e.g. on tmpfs, /run/...).
PARENT_VARIABLE = "DISPATCHER_METRICS_DIR"
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_SERVER = re.compile(r"(\d+)-(\d+)")
#: A worker's files that go with it: its live gauges, and its log of tenant states.
_LIVE_GAUGE = re.compile(r"gauge_live\w+?_(\d+)\.db|states_(\d+)\.log")
_WORKER_FILE = re.compile(r"(counter|histogram)_(\d+)\.db")
#: Held shared while a scrape reads the files, exclusively while dead workers' files merge.
_LOCK = ".lock"


def uwsgi_server() -> tuple[int, int, frozenset[int]] | None:
    """This uWSGI server's master pid, start time and workers' pids; ``None`` outside uWSGI
    or without a master (then each process is on its own)."""
    uwsgi = uwsgi_api()
    if uwsgi is None:
        return None
    master = int(uwsgi.masterpid())
    if not master:
        return None
    workers = frozenset(int(w["pid"]) for w in uwsgi.workers() if w["pid"])
    return master, int(uwsgi.started_on), workers


def use_server_folder(instance_root: str) -> str | None:
    """Create (or join) this server's folder and point prometheus-client at it.

    Returns the folder, or ``None`` outside uWSGI: a single process keeps its figures in
    memory. Must run before ``prometheus_client`` is imported.
    """
    server = uwsgi_server()
    if server is None:
        return None
    master, started, _ = server
    parent = os.environ.get(PARENT_VARIABLE) or os.path.join(instance_root, ".metrics")
    folder = os.path.join(parent, f"{master}-{started}")
    os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        os.mkdir(folder, mode=0o700)
    except FileExistsError:  # a sibling worker, or this worker's predecessor, made it
        pass
    else:  # the first worker of a new server start: the previous servers' figures go
        _remove_old_servers(parent, master, started)
    os.environ[MULTIPROC_VARIABLE] = folder
    return folder


def _remove_old_servers(parent: str, master: int, started: int) -> None:
    for name in os.listdir(parent):
        match = _SERVER.fullmatch(name)
        if match is None:
            continue  # not ours: leave it alone
        pid, start = int(match[1]), int(match[2])
        if (pid, start) == (master, started) or (pid != master and process_alive(pid)):
            continue  # this server, or another server still running on the same folder
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        log.info("metrics of an earlier server start removed: %s", name)


@contextlib.contextmanager
def locked(folder: str, *, exclusive: bool) -> Iterator[None]:
    """Readers (scrapes) share the folder; merging dead workers' files excludes them."""
    fd = os.open(os.path.join(folder, _LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def tidy(folder: str, living: frozenset[int] | None = None) -> list[int]:
    """Remove the live gauges of workers that are gone and merge their counters into the
    archive; return their pids. ``living``: the pids still running (default: the master's
    list of workers, and this process)."""
    if living is None:
        server = uwsgi_server()
        if server is None:
            return []
        living = server[2]
    living = living | {os.getpid()}
    names = os.listdir(folder)
    dead_gauges = {int(m[1] or m[2]) for n in names if (m := _LIVE_GAUGE.fullmatch(n))} - living
    dead_counts = {int(m[2]) for n in names if (m := _WORKER_FILE.fullmatch(n))} - living
    if not dead_gauges and not dead_counts:
        return []
    from prometheus_client import multiprocess

    for pid in dead_gauges:
        with contextlib.suppress(FileNotFoundError):  # another worker tidied it first
            multiprocess.mark_process_dead(pid, folder)
        for leftover in (f"states_{pid}.log", f"states_{pid}.log.partial"):
            with contextlib.suppress(FileNotFoundError):  # (.partial: killed mid-rewrite)
                os.remove(os.path.join(folder, leftover))
    if dead_counts:
        with locked(folder, exclusive=True):
            for kind in ("counter", "histogram"):
                _archive(folder, kind, dead_counts)
    return sorted(dead_gauges | dead_counts)


def _archive(folder: str, kind: str, pids: set[int]) -> None:
    """Merge ``<kind>_<pid>.db`` of dead workers into ``<kind>_archive.db`` (lock held)."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.multiprocess import MultiProcessCollector

    files = [f for pid in pids if os.path.exists(f := os.path.join(folder, f"{kind}_{pid}.db"))]
    if not files:
        return
    archive = os.path.join(folder, f"{kind}_archive.db")
    sources = [*files, archive] if os.path.exists(archive) else files
    # Buckets stay per bucket (accumulate=False): the archive is read like a worker's file.
    merged = MultiProcessCollector.merge(sources, accumulate=False)
    partial = archive + ".partial"  # not *.db: a scrape never reads a half-written archive
    with contextlib.suppress(FileNotFoundError):
        os.remove(partial)
    target = MmapedDict(partial)
    try:
        for metric in merged:
            for sample in metric.samples:
                key = mmap_key(
                    metric.name,
                    sample.name,
                    list(sample.labels),
                    list(sample.labels.values()),
                    metric.documentation,
                )
                target.write_value(key, sample.value, 0.0)
    finally:
        target.close()
    os.replace(partial, archive)
    for file in files:
        os.remove(file)


def worker_files(folder: str) -> list[str]:
    """The files a scrape reads (for tests and ``top``'s diagnostics)."""
    return sorted(os.path.basename(f) for f in glob.glob(os.path.join(folder, "*.db")))
