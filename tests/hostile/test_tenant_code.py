"""Tenant code that exits, hangs, races its own schema or reaches for another tenant's data
(DESIGN 4 and 9): it fails its own tenant, never another, and never the process.

Every case runs through the public entry point (the dispatcher's WSGI callable) and checks the
state the system really ends in: which tenants answer, what each database holds.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from dispatcher import Dispatcher, load_tenants, tenantapp
from dispatcher.build import build_app
from tests.e2e.servers import wait_for

HOST = {"Host": "localhost"}
HOSTILE = "tests.apps.hostile"


def get(client: Client, url: str) -> Any:
    return client.get(url, headers=HOST, buffered=True)


def rows(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [text for (text,) in connection.execute("SELECT text FROM row ORDER BY id")]


@pytest.fixture
def short_build_wait(monkeypatch: pytest.MonkeyPatch) -> float:
    """Requests (and boot) wait 0.3 s for a build instead of 10 s."""
    monkeypatch.setattr(tenantapp, "BUILD_WAIT", 0.3)
    return 0.3


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Path]:
    """The file a hanging factory waits for; created at the end so no build thread lingers."""
    go = tmp_path / "go"
    yield go
    go.touch()


def test_code_that_exits_fails_only_its_own_tenant(
    make_dispatcher: Callable[[str], Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    """sys.exit() in a factory or at import, eager or lazy, and a KeyboardInterrupt no
    operator sent: each is that tenant's 503 and a logged reason; the process goes on."""
    dispatcher = make_dispatcher(
        f"""
        version: 1
        server_names: [localhost]
        defaults: {{app: "{HOSTILE}:ordinary"}}
        tenants:
          acme: {{path: /acme}}
          quits: {{path: /quits, app: "{HOSTILE}:exits"}}
          quits-lazily: {{path: /quits-lazily, app: "{HOSTILE}:exits", lazy: true}}
          import-quits: {{path: /import-quits, app: tests.apps.exits_on_import}}
          interrupts: {{path: /interrupts, app: "{HOSTILE}:interrupts", lazy: true}}
        """
    )
    client = Client(dispatcher)
    for url in ("/quits/", "/quits-lazily/", "/import-quits/", "/interrupts/"):
        assert get(client, url).status_code == 503, url
        assert get(client, "/acme/").json["tenant"] == "acme"
    reasons = {
        r.tenant: r.getMessage()  # type: ignore[attr-defined]
        for r in caplog.records
        if r.levelname == "ERROR"
    }
    assert "raised SystemExit: 3" in reasons["quits"]
    assert "raised SystemExit: 3" in reasons["quits-lazily"]
    assert "raised SystemExit: this module refuses to be imported" in reasons["import-quits"]
    assert "raised KeyboardInterrupt" in reasons["interrupts"]
    counts = get(client, "/_dispatcher/health").json["tenants"]
    assert counts == {"ready": 1, "failed": 4, "lazy": 0, "maintenance": 0}


def test_a_view_that_exits_answers_500_and_the_process_goes_on(
    make_dispatcher: Callable[[str], Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = make_dispatcher(
        f"""
        version: 1
        server_names: [localhost]
        defaults: {{app: "{HOSTILE}:ordinary"}}
        tenants: {{acme: {{path: /acme}}, globex: {{path: /globex}}}}
        """
    )
    client = Client(dispatcher)
    assert get(client, "/acme/exit").status_code == 500
    (said,) = [r for r in caplog.records if "answered 500" in r.getMessage()]
    assert said.tenant == "acme"  # type: ignore[attr-defined]  # filtering on tenant=acme finds it
    assert get(client, "/acme/").status_code == 200
    assert get(client, "/globex/").status_code == 200
    assert dispatcher.tenants["acme"].in_flight == 0  # the failed request was let go


def test_a_factory_that_hangs_at_boot_holds_up_the_start_by_the_eager_wait_at_most(
    write_tenants: Callable[[str], Path], release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not by its 10 s build wait: a worker starts serving the others at once while the hung
    tenant goes on building (its own requests wait for it: see the lazy test below)."""
    monkeypatch.setattr(tenantapp, "EAGER_WAIT", 0.2)
    file = write_tenants(
        f"""
        version: 1
        server_names: [localhost]
        defaults: {{app: "{HOSTILE}:ordinary"}}
        tenants:
          stuck: {{path: /stuck, app: "{HOSTILE}:hangs", config: {{HANG_UNTIL_FILE: {release}}}}}
          acme: {{path: /acme}}
        """
    )
    started = time.monotonic()
    dispatcher = Dispatcher(load_tenants(file), background=False)
    try:
        assert time.monotonic() - started < tenantapp.BUILD_WAIT / 2
        client = Client(dispatcher)
        assert get(client, "/acme/").status_code == 200
        assert dispatcher.tenants["stuck"].building
        release.touch()
        wait_for(lambda: get(client, "/stuck/").status_code == 200, "the build to finish")
    finally:
        dispatcher.close()


def test_a_lazy_factory_that_hangs_holds_only_its_own_requests(
    make_dispatcher: Callable[[str], Dispatcher], short_build_wait: float, release: Path
) -> None:
    dispatcher = make_dispatcher(
        f"""
        version: 1
        server_names: [localhost]
        defaults: {{app: "{HOSTILE}:ordinary", lazy: true}}
        tenants:
          stuck: {{path: /stuck, app: "{HOSTILE}:hangs", config: {{HANG_UNTIL_FILE: {release}}}}}
          acme: {{path: /acme}}
        """
    )
    client = Client(dispatcher)
    waiting: list[int] = []
    threads = [
        threading.Thread(target=lambda: waiting.append(get(client, "/stuck/").status_code))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    others = [get(client, "/acme/").status_code for _ in range(20)]  # meanwhile
    for thread in threads:
        thread.join(10)
    assert others == [200] * 20
    assert waiting == [503] * 4
    assert dispatcher.tenants["stuck"].in_flight == 0


def test_a_slow_added_tenant_holds_up_an_edit_by_the_eager_wait_at_most(
    make_dispatcher: Callable[[str], Dispatcher],
    write_tenants: Callable[..., Path],
    release: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Live reload builds added tenants beside the running set, but waits for a slow one
    EAGER_WAIT at most (not its 10 s build wait): the edit is then applied, the other added
    tenant serves, and the slow one goes on building, to serve once built."""
    monkeypatch.setattr(tenantapp, "EAGER_WAIT", 0.2)
    base = f"""
        version: 1
        server_names: [localhost]
        defaults: {{app: "{HOSTILE}:ordinary"}}
        tenants:
          acme: {{path: /acme}}
    """
    dispatcher = make_dispatcher(base)
    client = Client(dispatcher)
    write_tenants(
        base.rstrip(" ") + f'          slow: {{path: /slow, app: "{HOSTILE}:hangs", '
        f"config: {{HANG_UNTIL_FILE: {release}}}}}\n          quick: {{path: /quick}}\n"
    )
    os.utime(dispatcher.tenant_set.file, (1_800_000_000, 1_800_000_000))
    started = time.monotonic()
    dispatcher.tick()  # what the background thread does
    assert time.monotonic() - started < tenantapp.BUILD_WAIT / 2
    assert [get(client, p).status_code for p in ("/acme/", "/quick/")] == [200, 200]
    assert dispatcher.tenants["slow"].building
    release.touch()
    wait_for(lambda: get(client, "/slow/").status_code == 200, "the slow tenant to serve")


def test_a_seeding_factory_is_built_once_by_concurrent_first_requests(
    make_dispatcher: Callable[[str], Dispatcher], tmp_path: Path
) -> None:
    dispatcher = make_dispatcher(
        f"""
        version: 1
        server_names: [localhost]
        tenants: {{acme: {{path: /acme, app: "{HOSTILE}:seeds", lazy: true}}}}
        """
    )
    client = Client(dispatcher)
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(get(client, "/acme/").status_code))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert statuses == [200] * 8
    assert rows(tmp_path / "instance" / "acme" / "app.db") == ["seed"]


def _build_seeds(tenant: object, barrier: Any, queue: Any) -> None:
    barrier.wait(10)
    try:
        build_app(tenant)  # type: ignore[arg-type]
        queue.put("ok")
    except BaseException as e:
        queue.put(f"{type(e).__name__}: {e}")


def test_a_seeding_factory_is_built_once_by_workers_booting_together(
    write_tenants: Callable[[str], Path], tmp_path: Path
) -> None:
    """Four processes build one new tenant at the same moment, as uWSGI's workers do."""
    file = write_tenants(f'version: 1\ntenants: {{acme: {{path: /acme, app: "{HOSTILE}:seeds"}}}}')
    tenant = load_tenants(file)["acme"]
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_build_seeds, args=(tenant, barrier, queue)) for _ in "abcd"]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(10)
    assert results == ["ok"] * 4
    assert rows(tmp_path / "instance" / "acme" / "app.db") == ["seed"]
