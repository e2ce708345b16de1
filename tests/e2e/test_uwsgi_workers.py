"""uwsgi.ini under load, through nginx: 2 processes x 4 threads, concurrent writes to several
tenants' SQLite databases, a worker killed with SIGKILL, a graceful reload, and database
connections that never cross a fork (DESIGN sections 4 and 8)."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from .servers import Worker, wait_for
from .stack import WRITERS, Stack

pytestmark = pytest.mark.e2e

WRITES = 300
CLIENTS = 24
#: uwsgi.ini's threads per process: at most this many requests die with a killed worker.
THREADS = 4


def test_concurrent_writes_all_land(stack: Stack, report_counts: Callable[..., None]) -> None:
    tag = uuid.uuid4().hex[:8]
    jobs = [(WRITERS[i % len(WRITERS)], f"{tag}-{i}") for i in range(WRITES)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(lambda job: stack.post_item(*job), jobs))
    stored = {text for text in stack.stored_items(WRITERS) if text.startswith(tag)}
    answered = dict(Counter(statuses))
    report_counts(sent=len(jobs), answered=answered, rows_found=len(stored))
    assert answered == {201: WRITES}
    assert stored == {text for _, text in jobs}
    assert "database is locked" not in stack.uwsgi.log_text()


def test_each_worker_uses_its_own_connections(
    stack: Stack, report_counts: Callable[..., None]
) -> None:
    stats = stack.uwsgi.stats()
    workers = {w["pid"] for w in stats["workers"]}
    with ThreadPoolExecutor(16) as pool:
        tenants = ["probe", "probe-sub"] * 16
        replies = list(pool.map(lambda t: stack.call(t, "/conn?sleep=0.1"), tenants))
    assert all(reply.status == 200 for reply in replies)
    seen = [reply.json() for reply in replies]
    report_counts(requests=len(seen), workers=sorted({s["pid"] for s in seen}))
    for s in seen:
        assert s["pid"] in workers
        # Opened and built in the worker itself: nothing comes from the master (lazy-apps).
        assert s["opened_by"] == s["pid"] != stats["pid"]
        assert s["built_by"] == s["pid"]
    assert {s["pid"] for s in seen} == workers, "both workers should have served"


class Writers:
    """Client threads that POST items to the echo tenants until stopped."""

    def __init__(self, stack: Stack, count: int = 8):
        self.stack = stack
        self.results: list[tuple[str, int | str]] = []
        self.numbers = itertools.count()
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(count)
        self.futures = [self.pool.submit(self.run) for _ in range(count)]

    def run(self) -> None:
        while not self.stop.is_set():
            n = next(self.numbers)
            text = f"w-{n}"
            self.results.append((text, self.stack.post_item(WRITERS[n % len(WRITERS)], text)))

    def wait_for_more(self, count: int) -> None:
        target = len(self.results) + count
        wait_for(lambda: len(self.results) >= target, f"{count} more answers", timeout=30)

    def finish(self) -> Counter[int | str]:
        self.stop.set()
        for future in self.futures:
            future.result()
        self.pool.shutdown()
        return Counter(status for _, status in self.results)

    def created(self) -> set[str]:
        return {text for text, status in self.results if status == 201}


def test_kill_9_worker_during_writes(
    make_stack: Callable[[], Stack], report_counts: Callable[..., None]
) -> None:
    stack = make_stack()
    victim = stack.uwsgi.workers()[0]
    writers = Writers(stack)
    try:
        writers.wait_for_more(100)
        os.kill(victim.pid, signal.SIGKILL)

        def respawned() -> Worker | None:
            workers = stack.uwsgi.ready_workers() or []
            new = [w for w in workers if w.id == victim.id and w.pid != victim.pid]
            return new[0] if new and len(workers) == 2 else None

        replacement = wait_for(respawned, f"the master to respawn worker {victim.id}")
        writers.wait_for_more(100)  # served by both workers again
    finally:
        answered = writers.finish()
    created = writers.created()
    stored = stack.stored_items(WRITERS)
    report_counts(
        sent=len(writers.results),
        answered=dict(answered),
        rows_found=len(stored),
        killed_pid=victim.pid,
        respawned_pid=replacement.pid,
    )
    assert created <= stored, f"answered 201 but missing: {sorted(created - stored)[:10]}"
    failed = len(writers.results) - answered[201]
    assert failed <= THREADS, f"more requests failed than the killed worker was serving: {answered}"
    assert "database is locked" not in stack.uwsgi.log_text()


def test_graceful_reload_drops_no_request(
    make_stack: Callable[[], Stack], report_counts: Callable[..., None]
) -> None:
    stack = make_stack()
    before = {w.pid for w in stack.uwsgi.workers()}
    writers = Writers(stack)
    try:
        writers.wait_for_more(50)
        os.utime(stack.uwsgi.reload_file)  # what `touch instance/.reload` does

        def reloaded() -> list[Worker] | None:
            workers = stack.uwsgi.ready_workers() or []
            fresh = len(workers) == 2 and not before & {w.pid for w in workers}
            done = "chain reloading complete" in stack.uwsgi.log_text()
            return workers if fresh and done else None

        after = wait_for(reloaded, "the chain reload to replace both workers", timeout=60)
        writers.wait_for_more(50)
    finally:
        answered = writers.finish()
    stored = stack.stored_items(WRITERS)
    report_counts(
        sent=len(writers.results),
        answered=dict(answered),
        rows_found=len(stored),
        pids_before=sorted(before),
        pids_after=sorted(w.pid for w in after),
    )
    assert answered == {201: len(writers.results)}
    assert writers.created() <= stored


def test_invalid_edit_then_worker_respawn_keeps_serving(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    tenants_file = stack.folder / "tenants.yaml"
    tenants_file.write_text(tenants_file.read_text() + "  acme: {path: /acme2}\n")  # duplicate
    seen = len(stack.uwsgi.log_text())

    def refused() -> bool:
        assert stack.call("acme", "/").status == 200
        return "is not valid" in stack.uwsgi.log_text()[seen:]

    wait_for(refused, "the live reload to refuse the edit")
    victim = stack.uwsgi.workers()[0]
    os.kill(victim.pid, signal.SIGKILL)

    def respawned() -> bool:
        workers = stack.uwsgi.ready_workers() or []
        return len(workers) == 2 and victim.pid not in {w.pid for w in workers}

    wait_for(respawned, f"the master to respawn worker {victim.id}")
    assert all(stack.call("acme", "/").status == 200 for _ in range(8))
