"""``restore`` under real uWSGI (2 processes x 4 threads), as an operator runs it from a shell.

Both workers hold pooled connections to the tenant's SQLite database across the restore. By the
time the command returns (give or take the workers' once-a-second look at the holds), every
worker serves exactly the archived rows, requests meanwhile get 200 or 503 and never another
state, and a row written after the restore is still there after uWSGI restarts: it went into
the file on disk, not into an unlinked inode (DESIGN section 12, issue 13).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .client import Reply, fetch
from .servers import ROOT, UWSGI, Uwsgi, free_port, wait_for

pytestmark = pytest.mark.e2e

TENANTS = """\
version: 1
server_names: [localhost]
instance_root: instance
defaults: {app: tests.e2e.rows_app}
tenants:
  acme: {path: /acme}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Uwsgi, int]]:
    if not os.access(UWSGI, os.X_OK):
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"uWSGI must be at {UWSGI} under CI=true")
        pytest.skip(f"end-to-end tests need uWSGI at {UWSGI} (make test installs it)")
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    port = free_port()
    options = ["--http-socket", f"127.0.0.1:{port}"]
    uwsgi = Uwsgi.start(tmp_path / "uwsgi", tmp_path / "tenants.yaml", options=options)
    try:
        yield uwsgi, port
    finally:
        uwsgi.stop()


def dispatcher(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m dispatcher -f tenants.yaml ARGS``, a real process, as from a shell."""
    argv = [sys.executable, "-m", "dispatcher", "-f", str(tmp_path / "tenants.yaml"), *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)


def get(port: int, sleep: float = 0.0) -> Reply:
    return fetch(port, f"/acme/rows?sleep={sleep}", host="localhost")


def post(port: int, text: str) -> Reply:
    reply = fetch(port, "/acme/rows", host="localhost", method="POST", form={"text": text})
    assert reply.status == 201, reply.text
    return reply


def every_worker_answers(port: int, workers: set[int]) -> list[Reply]:
    """Concurrent slow-ish requests until each worker has answered 200 at least once."""
    seen: dict[int, Reply] = {}

    def burst() -> bool:
        with ThreadPoolExecutor(8) as pool:
            for reply in pool.map(lambda _: get(port, 0.05), range(16)):
                if reply.status == 200:
                    seen.setdefault(reply.json()["pid"], reply)
        return set(seen) >= workers

    wait_for(burst, "every worker to answer 200", timeout=20)
    return list(seen.values())


def test_every_worker_serves_the_restored_rows_and_later_writes_survive_a_restart(
    server: tuple[Uwsgi, int], tmp_path: Path, report_counts: Callable[..., None]
) -> None:
    uwsgi, port = server
    workers = {w.pid for w in uwsgi.workers()}
    assert len(workers) == 2
    for n in range(5):
        post(port, f"archived-{n}")
    archived = [f"archived-{n}" for n in range(5)]
    every_worker_answers(port, workers)  # each worker now holds a pooled connection

    backup = dispatcher(tmp_path, "backup", "acme")
    assert backup.returncode == 0, backup.stderr
    archive = backup.stdout.split()[1]
    for n in range(5):
        post(port, f"lost-{n}")
    assert {tuple(r.json()["rows"]) for r in every_worker_answers(port, workers)} == {
        tuple(archived + [f"lost-{n}" for n in range(5)])
    }
    database = tmp_path / "instance" / "acme" / "app.db"
    inode = database.stat().st_ino

    # Readers keep asking while the restore runs: 200 (either state, whole) or 503, nothing else.
    stop, during = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            reply = get(port)
            during.append((reply.status, reply.json()["rows"] if reply.status == 200 else None))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        restore = dispatcher(tmp_path, "restore", archive, "--force")
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert restore.returncode == 0, restore.stderr
    report_counts(during_the_restore=dict(Counter(status for status, _ in during)))
    assert "Restored into acme; rows per table, verified:" in restore.stdout
    assert {status for status, _ in during} <= {200, 503}, during
    states = {tuple(rows) for status, rows in during if status == 200}
    assert states <= {tuple(archived), tuple(archived + [f"lost-{n}" for n in range(5)])}
    assert database.stat().st_ino == inode, "the database was written into, not replaced"

    # Every worker, through the connection it kept, serves exactly the archived rows.
    for reply in every_worker_answers(port, workers):
        assert reply.json()["rows"] == archived
    # Both workers write (in concurrent bursts: one idle worker may take every request sent
    # one at a time; a worker's fourth concurrent request is over the tenant's limit, 503).
    after: list[str] = []
    written_by: set[int] = set()
    sent = iter(range(1000))

    def write(text: str) -> tuple[str, Reply]:
        form = {"text": text}
        return text, fetch(port, "/acme/rows", host="localhost", method="POST", form=form)

    def write_burst() -> bool:
        with ThreadPoolExecutor(8) as pool:
            for text, reply in pool.map(write, [f"after-{next(sent)}" for _ in range(8)]):
                assert reply.status in (201, 503), reply.text
                if reply.status == 201:
                    after.append(text)
                    written_by.add(reply.json()["pid"])
        return written_by >= workers

    wait_for(write_burst, "both workers to write after the restore", timeout=20)

    uwsgi.stop()
    again = Uwsgi.start(
        tmp_path / "uwsgi-again", tmp_path / "tenants.yaml", options=uwsgi_options(port)
    )
    try:
        for reply in every_worker_answers(port, {w.pid for w in again.workers()}):
            rows = reply.json()["rows"]  # the archived rows, then the later ones in any order
            assert rows[: len(archived)] == archived
            assert sorted(rows[len(archived) :]) == sorted(after)
    finally:
        again.stop()
    log = uwsgi.log_text()
    assert "Traceback" not in log and "database is locked" not in log


def uwsgi_options(port: int) -> list[str]:
    return ["--http-socket", f"127.0.0.1:{port}"]
