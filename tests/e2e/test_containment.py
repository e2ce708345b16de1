"""Tenant code that exits, hangs or races itself, under real uWSGI (2 processes x 4 threads):
no worker ever dies of it, and every other tenant answers every request (DESIGN 9, issue 11).

The servers here listen with ``--http-socket`` (no nginx: what is tested is uWSGI's workers).
"""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dispatcher import load_tenants
from dispatcher.holds import held

from .client import fetch
from .servers import Tools, Uwsgi, free_port, wait_for

pytestmark = pytest.mark.e2e

HOSTILE = "tests.apps.hostile"


class Server:
    """uwsgi.ini on an HTTP port, serving a tenants file written into ``folder``."""

    def __init__(self, folder: Path, tenants: str, options: tuple[str, ...] = ()) -> None:
        self.folder = folder
        folder.mkdir()
        self.file = folder / "tenants.yaml"
        self.file.write_text(textwrap.dedent(tenants))
        self.port = free_port()
        options = ("--http-socket", f"127.0.0.1:{self.port}", *options)
        self.uwsgi = Uwsgi.start(folder / "uwsgi", self.file, options=options)

    def get(self, path: str, timeout: float = 30.0) -> int:
        return fetch(self.port, path, host="localhost", timeout=timeout).status

    def pids(self) -> set[int]:
        return {w.pid for w in self.uwsgi.workers()}

    def stop(self) -> None:
        self.uwsgi.stop()


Serve = Callable[..., Server]


@pytest.fixture
def serve(tools: Tools, tmp_path: Path) -> Iterator[Serve]:
    """Start a server for a tenants file's text (and extra uWSGI options); stopped after."""
    started: list[Server] = []

    def start(tenants: str, options: tuple[str, ...] = ()) -> Server:
        started.append(Server(tmp_path / f"server{len(started)}", tenants, options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


# The tenants here take up to 8 requests at once per worker: under the default limit (threads - 1
# = 3 per worker) a fourth of the client's 8 concurrent requests landing on one worker would be
# answered 503 at once, as DESIGN 11 says; what these tests are about is elsewhere.


def test_tenant_code_that_exits_never_ends_a_worker(serve: Serve) -> None:
    server = serve(
        f"""\
        version: 1
        server_names: [localhost]
        defaults: {{app: "{HOSTILE}:ordinary", limits: {{concurrent: 8}}}}
        tenants:
          acme: {{path: /acme}}
          quits: {{path: /quits, app: "{HOSTILE}:exits"}}
          import-quits: {{path: /import-quits, app: tests.apps.exits_on_import}}
          quits-lazily: {{path: /quits-lazily, app: "{HOSTILE}:exits", lazy: true}}
          interrupts: {{path: /interrupts, app: "{HOSTILE}:interrupts", lazy: true}}
        """
    )
    workers = server.pids()
    urls = ["/quits/", "/import-quits/", "/quits-lazily/", "/interrupts/", "/acme/exit"] * 8
    with ThreadPoolExecutor(8) as pool:
        hostile = Counter(pool.map(server.get, urls))
        ordinary = Counter(pool.map(server.get, ["/acme/"] * 64))
    assert hostile == {503: 32, 500: 8}
    assert ordinary == {200: 64}
    assert server.pids() == workers, "a worker died and was respawned"
    assert "respawned" not in server.uwsgi.log_text()


def test_a_factory_that_hangs_leaves_every_other_tenant_serving(
    serve: Serve, tmp_path: Path
) -> None:
    """One tenant hangs at boot, one on its first request: boot goes on after the eager wait
    (1 s), the hung tenant's requests get 503 when their build wait runs out, the others never
    wait."""
    never = tmp_path / "never"  # the hanging factories wait for this file
    server = serve(
        f"""\
        version: 1
        server_names: [localhost]
        defaults: {{app: "{HOSTILE}:ordinary", limits: {{concurrent: 8}}}}
        tenants:
          acme: {{path: /acme}}
          stuck: {{path: /stuck, app: "{HOSTILE}:hangs", config: {{HANG_UNTIL_FILE: {never}}}}}
          stuck-lazily:
            path: /stuck-lazily
            app: "{HOSTILE}:hangs"
            lazy: true
            config: {{HANG_UNTIL_FILE: {never}}}
        """
    )
    workers = server.pids()
    with ThreadPoolExecutor(8) as pool:
        hung = [pool.submit(server.get, "/stuck-lazily/") for _ in range(3)]
        others = Counter(pool.map(server.get, ["/acme/"] * 200))
        assert others == {200: 200}
        assert not all(f.done() for f in hung)  # still waiting on their build meanwhile
        assert [f.result() for f in hung] == [503] * 3
    assert server.get("/stuck/") == 503
    assert server.pids() == workers
    never.touch()
    wait_for(lambda: server.get("/stuck-lazily/") == 200, "the hung build to finish")


def test_twenty_fresh_boots_of_a_seeding_factory_answer_every_first_request(
    serve: Serve,
) -> None:
    """The seeds' pattern (create_all() and a first row in the factory) under uWSGI's
    workers booting at once: without one build at a time per tenant, about one boot in four
    had a worker answer 503 for 30 s ("table already exists")."""
    # limits: all 24 first requests are let in (the default, threads - 1 = 3 per worker,
    # would answer some of the 8 at once per tenant 503, which is not what is tested here).
    tenants = """\
        version: 1
        server_names: [localhost]
        defaults: {app: "tests.apps.hostile:seeds", limits: {concurrent: 8}}
        tenants:
          acme: {path: /acme}
          globex: {path: /globex}
          initech: {path: /initech, lazy: true}
    """
    for boot in range(20):
        server = serve(tenants)
        with ThreadPoolExecutor(8) as pool:
            first = Counter(pool.map(server.get, ["/acme/", "/globex/", "/initech/"] * 8))
        assert first == {200: 24}, f"boot {boot}: {first}"
        server.stop()
        for name in ("acme", "globex", "initech"):
            database = server.folder / "instance" / name / "app.db"
            with sqlite3.connect(database) as connection:
                seeds = connection.execute("SELECT count(*) FROM row").fetchone()
            assert seeds == (1,), f"boot {boot}: tenant {name} has {seeds[0]} seed rows"


def test_workers_forked_from_a_loaded_master_follow_edits(serve: Serve, tmp_path: Path) -> None:
    """Without lazy-apps, uWSGI loads the app in the master and forks: each worker starts its
    own background thread (the master runs none), so edits still reach every worker; a build
    still running in the master when it forked is made anew in each worker.

    The stuck factory runs Python code while the master forks: without uwsgi.ini's
    py-call-uwsgi-fork-hooks a worker could inherit the GIL held by that thread, which does
    not exist in the worker, and never serve (both workers, in 4 boots of 5 by hand).
    """
    extra = tmp_path / "no-lazy-apps.ini"
    extra.write_text("[uwsgi]\nlazy-apps = false\n")
    release = tmp_path / "go"
    base = f"""\
        version: 1
        server_names: [localhost]
        defaults: {{app: "{HOSTILE}:ordinary", limits: {{concurrent: 8}}}}
        tenants:
          acme: {{path: /acme}}
          stuck: {{path: /stuck, app: "{HOSTILE}:spins", config: {{HANG_UNTIL_FILE: {release}}}}}
    """
    server = serve(base, ("--ini", str(extra)))  # the master waits 1 s for stuck, then forks
    server.file.write_text(textwrap.dedent(base) + "  added: {path: /added}\n")
    release.touch()
    master_threads = f"/proc/{server.uwsgi.pid}/task"
    wait_for(lambda: len(os.listdir(master_threads)) == 1, "the master's build thread to end")

    def every_worker_serves(url: str) -> bool:
        with ThreadPoolExecutor(8) as pool:
            return set(pool.map(server.get, [url] * 16)) == {200}

    wait_for(lambda: every_worker_serves("/added/"), "both workers to serve the added tenant")
    wait_for(lambda: every_worker_serves("/stuck/"), "both workers to build the stuck tenant")

    # Each worker reports to the holds for itself (not under a name made in the master).
    reports = server.folder / "instance" / ".maintenance" / ".workers"
    workers = server.pids()

    def reporters() -> set[int]:
        files = [p for p in reports.iterdir() if not p.name.endswith(".tmp")]
        found = {json.loads(p.read_text())["pid"] for p in files}
        return found if found == workers else set()

    wait_for(reporters, "each worker's own report")
    with held(load_tenants(server.file), "acme", "testing"):
        assert {server.get("/acme/") for _ in range(8)} == {503}
    assert every_worker_serves("/acme/")


def test_workers_forked_while_a_factory_runs_python_all_serve(serve: Serve, tmp_path: Path) -> None:
    """Without lazy-apps uWSGI forks while the stuck factory still runs Python code in the
    master (it spins past the 1 s eager wait). Without uwsgi.ini's py-call-uwsgi-fork-hooks a
    worker could inherit the GIL held by that thread and never serve: both workers in 4 boots
    of 5 by hand. Three boots here: serve() waits for both workers to accept."""
    extra = tmp_path / "no-lazy-apps.ini"
    extra.write_text("[uwsgi]\nlazy-apps = false\n")
    for boot in range(3):
        release = tmp_path / f"go{boot}"
        spins = f'app: "{HOSTILE}:spins", config: {{HANG_UNTIL_FILE: {release}}}'
        server = serve(
            f"""\
            version: 1
            server_names: [localhost]
            defaults: {{app: "{HOSTILE}:ordinary", limits: {{concurrent: 8}}}}
            tenants:
              acme: {{path: /acme}}
              stuck: {{path: /stuck, {spins}}}
            """,
            ("--ini", str(extra)),
        )
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(server.get, ["/acme/"] * 16)) == {200}
        release.touch()
