"""Maintenance holds, acknowledged by every worker (DESIGN 10, 12, 13): a command that holds a
tenant works only once no worker has a request of it in flight or its app open, and when the
command returns every worker serves the tenant again. Both stores: the instance root's folder
(one machine) and the control database (a fleet)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from werkzeug.test import Client

from dispatcher import Dispatcher, holds, load_tenants
from dispatcher.holds import HoldError, held, store_for
from tests.conftest import Clock, postgres
from tests.e2e.servers import wait_for

HOST = {"Host": "localhost"}

TENANTS = """\
version: 1
server_names: [localhost]
{control}
defaults: {{app: "tests.apps.hostile:ordinary"}}
tenants:
  acme: {{path: /acme}}
  globex: {{path: /globex}}
"""


@pytest.fixture(params=["folder", "control database"])
def tenants_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The tenants file, with holds in the instance root's folder or in a control database."""
    if request.param == "control database":
        return request.getfixturevalue("fleet_file")  # type: ignore[no-any-return]
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS.format(control=""))
    return path


@pytest.fixture
def fleet_file(tmp_path: Path, pg_prefix: str) -> Path:
    """A tenants file with a control database (created here, dropped afterwards)."""
    with postgres() as connection:
        connection.execute(f'CREATE DATABASE "{pg_prefix}control"')
    path = tmp_path / "tenants.yaml"
    control = f"control_database: postgresql://postgres@127.0.0.1/{pg_prefix}control"
    path.write_text(TENANTS.format(control=control))
    return path


def run(script: str) -> subprocess.Popen[str]:
    """A Python process running ``script``, its output piped."""
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


@pytest.fixture
def serve(request: pytest.FixtureRequest) -> Iterator[Callable[..., Dispatcher]]:
    """Dispatchers with their background thread, as a server's workers run them."""
    started: list[Dispatcher] = []

    def start(file: Path | None = None) -> Dispatcher:
        file = file or request.getfixturevalue("tenants_file")
        started.append(Dispatcher(load_tenants(file)))
        return started[-1]

    yield start
    for dispatcher in started:
        dispatcher.close()


def status(client: Client, url: str) -> int:
    return client.get(url, headers=HOST, buffered=True).status_code


def test_a_hold_waits_for_requests_in_flight_and_serves_again_at_once(
    tenants_file: Path, serve: Callable[..., Dispatcher]
) -> None:
    tenant_set = load_tenants(tenants_file)
    workers = [serve(), serve()]
    clients = [Client(w) for w in workers]
    go = Path(tenant_set.instance_root) / "acme" / "go"
    waiting = threading.Thread(target=lambda: status(clients[0], "/acme/wait/go"))
    waiting.start()
    wait_for(lambda: workers[0].tenants["acme"].in_flight == 1, "the request in flight")
    inside: list[object] = []

    def hold() -> None:
        with held(tenant_set, "acme", "testing"):
            inside.append([(w.tenants["acme"].app, w.tenants["acme"].in_flight) for w in workers])
            inside.append([status(c, "/acme/") for c in clients])
            inside.append([status(c, "/globex/") for c in clients])

    holder = threading.Thread(target=hold)
    holder.start()
    wait_for(lambda: all(status(c, "/acme/") == 503 for c in clients), "both workers to hold")
    assert not inside, "the hold went on while a request of the tenant was in flight"
    go.touch()
    holder.join(60)
    waiting.join(10)
    assert inside == [[(None, 0), (None, 0)], [503, 503], [200, 200]]
    assert [status(c, "/acme/") for c in clients] == [200, 200]  # at once, on every worker


def test_a_stuck_request_makes_the_hold_fail_and_changes_nothing(
    tenants_file: Path, serve: Callable[..., Dispatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(holds, "HOLD_TIMEOUT", 1.0)
    tenant_set = load_tenants(tenants_file)
    worker = serve()
    client = Client(worker)
    go = Path(tenant_set.instance_root) / "acme" / "go"
    waiting = threading.Thread(target=lambda: status(client, "/acme/wait/go"))
    waiting.start()
    wait_for(lambda: worker.tenants["acme"].in_flight == 1, "the request in flight")
    ran = []
    try:
        with (
            pytest.raises(HoldError, match="did not let go of it within 1 s"),
            held(tenant_set, "acme", "testing"),
        ):
            ran.append(True)
    finally:
        go.touch()
        waiting.join(10)
    assert not ran
    with contextlib.closing(store_for(tenant_set)) as store:
        assert "acme" not in store.held()
    wait_for(lambda: status(client, "/acme/") == 200, "acme to serve again")


def test_without_workers_a_hold_waits_for_nobody(tenants_file: Path) -> None:
    tenant_set = load_tenants(tenants_file)
    with contextlib.closing(store_for(tenant_set)) as store:
        with held(tenant_set, "acme", "testing"):
            assert store.held() == {"acme"}
        assert store.held() == frozenset()


def test_a_worker_killed_without_a_word_is_not_waited_for(
    tenants_file: Path, tmp_path: Path
) -> None:
    """A uWSGI worker killed with -9 leaves its report behind: a hold must not wait for it
    (on this machine its pid is gone; elsewhere its heartbeat stops)."""
    script = (
        "import sys, time\n"
        "from dispatcher import Dispatcher, load_tenants\n"
        f"d = Dispatcher(load_tenants({str(tenants_file)!r}))\n"
        "d.tick(); print('ready', flush=True); time.sleep(600)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        tenant_set = load_tenants(tenants_file)
        with contextlib.closing(store_for(tenant_set)) as store:
            assert len(store.workers()) == 1
        child.send_signal(signal.SIGKILL)
    with held(tenant_set, "acme", "testing"):
        pass


def test_two_holders_of_one_tenant_take_turns(tenants_file: Path) -> None:
    tenant_set = load_tenants(tenants_file)
    events: list[str] = []
    first_in = threading.Event()
    release_first = threading.Event()

    def first() -> None:
        with held(tenant_set, "acme", "first"):
            events.append("first in")
            first_in.set()
            assert release_first.wait(10)
            events.append("first out")

    def second() -> None:
        with held(tenant_set, "acme", "second"):
            events.append("second in")

    one = threading.Thread(target=first)
    one.start()
    assert first_in.wait(10)
    two = threading.Thread(target=second)
    two.start()
    two.join(0.3)
    assert two.is_alive()  # waiting for the first holder
    release_first.set()
    one.join(10)
    two.join(10)
    assert events == ["first in", "first out", "second in"]


def test_a_crashed_holders_hold_expires(fleet_file: Path) -> None:
    """DESIGN 13: with a control database, a holder killed mid-way holds nothing for long.
    (A folder hold is a file: an operator removes a crashed command's by hand, documented.)"""
    tenant_set = load_tenants(fleet_file)
    script = (
        "import time\n"
        "from dispatcher.control import DatabaseHolds\n"
        f"store = DatabaseHolds({tenant_set.control_database!r}, ttl=2)\n"
        "store.put('acme', 'crashing'); print('held', flush=True); time.sleep(600)\n"
    )
    with (
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
        ) as child,
        contextlib.closing(store_for(tenant_set)) as store,
    ):
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        wait_for(lambda: store.held() == {"acme"}, "the hold")
        child.send_signal(signal.SIGKILL)
        wait_for(lambda: store.held() == frozenset(), "the hold to expire", timeout=10)


def test_a_released_hold_leaves_no_thread_behind(fleet_file: Path) -> None:
    """A hold's refresher has stopped when release() returns: no connection of the hold
    outlives it (one still opening after a quick hold failed later, the database dropped)."""
    before = set(threading.enumerate())
    with contextlib.closing(store_for(load_tenants(fleet_file))) as store:
        store.put("acme", "migrating")
        store.release("acme")
        assert set(threading.enumerate()) - before == set()


def test_a_control_database_holds_a_tenant_on_every_node(
    fleet_file: Path, tmp_path: Path, serve: Callable[..., Dispatcher]
) -> None:
    """Two nodes: their own instance roots, one control database and one tenants file's
    worth of tenants. A hold taken from node 1's file holds the tenant on node 2 too."""
    tenant_set = load_tenants(fleet_file)
    other = tmp_path / "node2" / "tenants.yaml"
    other.parent.mkdir()
    other.write_text(fleet_file.read_text())
    nodes = [serve(fleet_file), serve(other)]
    clients = [Client(n) for n in nodes]
    assert [status(c, "/acme/") for c in clients] == [200, 200]
    with held(tenant_set, "acme", "migrating"):
        assert [status(c, "/acme/") for c in clients] == [503, 503]
        assert [status(c, "/globex/") for c in clients] == [200, 200]
    assert [status(c, "/acme/") for c in clients] == [200, 200]


def test_a_held_tenant_whose_build_failed_is_not_built_again_until_released(
    tenants_file: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The retries of a failed build wait for the hold to end: the holder (migrate, restore)
    has the tenant's database to itself."""
    tenants_file.write_text(
        tenants_file.read_text() + '  quits: {path: /quits, app: "tests.apps.hostile:exits"}\n'
    )
    tenant_set = load_tenants(tenants_file)

    def builds() -> int:
        return sum(1 for r in caplog.records if getattr(r, "tenant", None) == "quits")

    dispatcher = Dispatcher(tenant_set, background=False)
    store = store_for(tenant_set)
    try:
        wait_for(lambda: not dispatcher.tenants["quits"].building, "the first build")
        assert builds() == 1
        store.put("quits", "testing")
        for _ in range(3):  # well past every retry time
            clock.now += 60
            dispatcher.tick()
        assert builds() == 1
        assert status(Client(dispatcher), "/quits/") == 503
        store.release("quits")
        dispatcher.tick()  # released: built again at once
        wait_for(lambda: builds() == 2, "the build after the hold")
    finally:
        store.release("quits")
        store.close()
        dispatcher.close()


def test_an_unreachable_control_database_is_named_with_what_to_check() -> None:
    from dispatcher.control import DatabaseHolds

    store = DatabaseHolds("postgresql://ops:s3cret@127.0.0.1:1/control")
    with pytest.raises(HoldError) as refused, store.exclusive("acme"):
        pass
    message = str(refused.value)
    assert "control database postgresql://ops:***@127.0.0.1:1/control" in message
    assert "Check 'control_database:' in the tenants file" in message
    assert "s3cret" not in message


def test_an_unreachable_control_database_is_tried_again_only_now_and_then(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    """Each try may wait the connect timeout on the worker's background thread (which also
    follows the tenants file): while the database is out of reach, one try per interval."""
    from dispatcher import control

    tries: list[float] = []
    real_connect = control.connect

    def counting_connect(url: str) -> object:
        tries.append(clock.now)
        return real_connect(url)

    monkeypatch.setattr(control, "connect", counting_connect)
    store = control.DatabaseHolds("postgresql://ops@127.0.0.1:1/control")
    for _ in range(5):  # five ticks within a second
        assert store.held() == frozenset()
        store.report("worker", frozenset())
    assert len(tries) == 1
    clock.now += control.RETRY_SECONDS
    store.held()
    assert len(tries) == 2
