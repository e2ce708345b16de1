"""Live reload of tenants.yaml inside one dispatcher (DESIGN section 6)."""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from dispatcher import Dispatcher, collector, load_tenants, watch
from dispatcher.build import app_engines
from dispatcher.running import running_text
from tests.conftest import Clock
from tests.e2e.servers import wait_for

BASE = """
    version: 1
    server_names: [localhost]
    defaults: {app: tests.apps.echo}
    tenants:
"""


class Editor:
    """Rewrites the tenants file with new tenant lines; the dispatcher started with
    :meth:`start` then runs one background tick, as its thread would within a second."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation = 0
        self.dispatcher: Dispatcher | None = None

    def __call__(self, tenants: str) -> None:
        self.generation += 1
        self.path.write_text(BASE + tenants)
        # Same-second edits must be seen too: push the mtime forward explicitly.
        stamp = 1_700_000_000 + self.generation
        os.utime(self.path, (stamp, stamp))
        if self.dispatcher is not None:
            self.dispatcher.tick()


@pytest.fixture
def edit(tmp_path: Path) -> Iterator[Editor]:
    editor = Editor(tmp_path / "tenants.yaml")
    yield editor
    if editor.dispatcher is not None:
        editor.dispatcher.close()


def start(edit: Editor, tmp_path: Path, tenants: str) -> tuple[Dispatcher, Client]:
    edit(tenants)
    edit.dispatcher = Dispatcher(load_tenants(tmp_path / "tenants.yaml"), background=False)
    return edit.dispatcher, Client(edit.dispatcher)


def status(client: Client, url: str) -> int:
    return client.get(url, headers={"Host": "localhost"}).status_code


def test_added_tenant_serves_and_removed_one_404s(edit: Editor, tmp_path: Path) -> None:
    dispatcher, client = start(
        edit, tmp_path, "      acme: {path: /acme}\n      globex: {path: /globex}\n"
    )
    globex_app = dispatcher.tenants["globex"].app
    assert globex_app is not None
    (engine,) = app_engines(globex_app)
    client.get("/globex/items", headers={"Host": "localhost"})
    assert engine.pool.checkedin() == 1
    edit("      acme: {path: /acme}\n      initech: {path: /initech}\n")
    assert status(client, "/initech/") == 200
    assert status(client, "/globex/") == 404
    assert engine.pool.checkedin() == 0  # the removed tenant's pool was disposed


def test_an_edit_made_while_the_dispatcher_was_starting_is_applied(
    edit: Editor, tmp_path: Path
) -> None:
    """The file was read, then edited while the eager tenants were still being built (a
    worker booting during an edit): the first look at the file sees the edit."""
    edit("      acme: {path: /acme}\n")
    tenant_set = load_tenants(tmp_path / "tenants.yaml")
    edit("      acme: {path: /acme}\n      initech: {path: /initech}\n")  # meanwhile
    edit.dispatcher = dispatcher = Dispatcher(tenant_set, background=False)
    client = Client(dispatcher)
    assert status(client, "/initech/") == 404
    dispatcher.tick()
    assert status(client, "/initech/") == 200


def test_unchanged_tenants_keep_their_app_and_pool(edit: Editor, tmp_path: Path) -> None:
    dispatcher, client = start(
        edit, tmp_path, "      acme: {path: /acme}\n      globex: {path: /globex}\n"
    )
    acme = dispatcher.tenants["acme"].app
    globex = dispatcher.tenants["globex"].app
    # acme moves down the file (a different line) but is the same; globex's config changes.
    edit("      globex: {path: /globex, config: {X: 1}}\n\n\n      acme: {path: /acme}\n")
    assert status(client, "/acme/") == 200
    assert dispatcher.tenants["acme"].app is acme
    assert dispatcher.tenants["globex"].app is not globex
    assert dispatcher.tenants["globex"].app.config["X"] == 1  # type: ignore[union-attr]


def test_invalid_edit_changes_nothing_and_is_logged(
    edit: Editor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher, client = start(edit, tmp_path, "      acme: {path: /acme}\n")
    routes = dispatcher.routes
    edit("      acme: {pth: /acme}\n      new: {path: /new}\n")
    assert status(client, "/acme/") == 200
    assert status(client, "/new/") == 404
    assert dispatcher.routes is routes
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    assert "still serving the previous tenants" in message
    assert "tenants.yaml:6: tenant 'acme', field 'pth': unknown field" in message
    # The same broken file is not re-read and re-logged every second, nor when touched.
    caplog.clear()
    dispatcher.tick()
    os.utime(tmp_path / "tenants.yaml", (1_800_000_000, 1_800_000_000))
    dispatcher.tick()
    assert status(client, "/acme/") == 200
    assert not caplog.records


def test_a_touched_file_reloads_nothing(
    edit: Editor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bare `touch`, or a save with the same content, costs one stat and one read."""
    dispatcher, _client = start(edit, tmp_path, "      acme: {path: /acme}\n")
    routes = dispatcher.routes
    caplog.set_level(logging.INFO, logger="dispatcher")
    os.utime(tmp_path / "tenants.yaml", (1_800_000_000, 1_800_000_000))
    dispatcher.tick()
    assert dispatcher.routes is routes
    assert not [r for r in caplog.records if "reloaded" in r.getMessage()]


def test_the_background_thread_picks_up_an_edit(tmp_path: Path) -> None:
    """Under a server nobody calls tick(): the dispatcher's own thread does, once a second."""
    path = tmp_path / "tenants.yaml"
    path.write_text(BASE + "      acme: {path: /acme}\n")
    dispatcher = Dispatcher(load_tenants(path))
    try:
        client = Client(dispatcher)
        path.write_text(BASE + "      acme: {path: /acme}\n      b: {path: /b}\n")
        os.utime(path, (1_800_000_000, 1_800_000_000))
        wait_for(lambda: status(client, "/b/") == 200, "the added tenant", timeout=10)
    finally:
        dispatcher.close()


def test_failed_eager_tenant_is_retried_in_the_background(
    edit: Editor, tmp_path: Path, clock: Clock
) -> None:
    config = tmp_path / "instance" / "acme" / "config.py"
    config.parent.mkdir(parents=True)
    config.write_text("FAIL_TO_BUILD = True\n")
    dispatcher, client = start(edit, tmp_path, "      acme: {path: /acme}\n")
    assert status(client, "/acme/") == 503
    config.write_text("FAIL_TO_BUILD = False\n")
    dispatcher.tick()  # too soon: the first retry comes a second after the failure
    assert dispatcher.tenants["acme"].state == "failed"
    clock.now += 1.1
    dispatcher.tick()  # no request needed: the background thread retries eager tenants
    wait_for(lambda: dispatcher.tenants["acme"].state == "ready", "the retried build")
    assert status(client, "/acme/") == 200


def test_request_in_flight_finishes_on_the_set_it_started_on(edit: Editor, tmp_path: Path) -> None:
    dispatcher, client = start(edit, tmp_path, "      acme: {path: /acme}\n")
    old_app = dispatcher.tenants["acme"].app
    assert old_app is not None
    entered, release = threading.Event(), threading.Event()

    @old_app.get("/slow")
    def slow() -> Any:
        entered.set()
        assert release.wait(10)
        return {"app": id(old_app)}

    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(client.get("/acme/slow", headers={"Host": "localhost"}).json)
    )
    thread.start()
    try:
        assert entered.wait(10)
        edit("      acme: {path: /acme, config: {X: 2}}\n")
        assert status(client, "/acme/") == 200
        assert dispatcher.tenants["acme"].app is not old_app
    finally:
        release.set()
        thread.join(10)
    assert result == [{"app": id(old_app)}]


def test_maintenance_toggled_live(edit: Editor, tmp_path: Path) -> None:
    _, client = start(edit, tmp_path, "      acme: {path: /acme}\n")
    edit("      acme: {path: /acme, maintenance: {retry_after: 42}}\n")
    response = client.get("/acme/", headers={"Host": "localhost"})
    assert (response.status_code, response.headers["Retry-After"]) == (503, "42")
    edit("      acme: {path: /acme}\n")
    assert status(client, "/acme/") == 200


def test_compare_names_what_a_reload_does(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(BASE + "      a: {path: /a}\n      b: {path: /b}\n      c: {path: /c}\n")
    old = {t.name: t for t in load_tenants(path)}
    path.write_text(BASE + "      a: {path: /a}\n      b: {path: /bee}\n      d: {path: /d}\n")
    changes = watch.compare(old, load_tenants(path))
    assert changes == watch.Changes(added=("d",), removed=("c",), changed=("b",), unchanged=("a",))
    assert str(changes) == "1 added, 1 removed, 1 rebuilt, 1 unchanged"


def test_diff_shows_what_a_reload_would_do(edit: Editor, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dispatcher.cli import main

    start(edit, tmp_path, "      acme: {path: /acme}\n      globex: {path: /globex}\n")
    path = tmp_path / "tenants.yaml"
    path.write_text(
        BASE + "      acme: {path: /acme, lazy: true}\n      initech: {path: /initech}\n"
    )
    result = CliRunner().invoke(main, ["-f", str(path), "diff"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "+ initech",
        "- globex",
        "~ acme",
        "1 added, 1 removed, 1 rebuilt, 0 unchanged",
    ]
    assert not (tmp_path / "instance" / "initech").exists()  # nothing applied
    older = tmp_path / "older.yaml"
    older.write_text(BASE + "      acme: {path: /acme, lazy: true}\n")
    result = CliRunner().invoke(main, ["-f", str(path), "diff", "--against", str(older)])
    assert result.output.splitlines()[-1] == "1 added, 0 removed, 0 rebuilt, 1 unchanged"


def test_diff_without_a_running_copy_says_how(write_tenants: Callable[[str], Path]) -> None:
    from click.testing import CliRunner

    from dispatcher.cli import main

    path = write_tenants(BASE + "      acme: {path: /acme}\n")
    result = CliRunner().invoke(main, ["-f", str(path), "diff"])
    assert result.exit_code == 1
    assert "--against" in result.output


def test_diff_against_a_file_that_is_not_utf8_says_where(
    write_tenants: Callable[[str], Path], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from dispatcher.cli import main

    path = write_tenants(BASE + "      acme: {path: /acme}\n")
    older = tmp_path / "older.yaml"
    older.write_bytes(b"version: 1\n\xff\n")
    result = CliRunner().invoke(main, ["-f", str(path), "diff", "--against", str(older)])
    assert result.exit_code == 1
    assert f"{older}:2: the file is not UTF-8 text" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_requested_reload_rereads_an_unchanged_file(edit: Editor, tmp_path: Path) -> None:
    """SIGHUP under `python -m dispatcher serve` calls reload_now(): the file is re-read even
    when its time, size and inode look unchanged (two edits within one clock tick, say)."""
    dispatcher, client = start(edit, tmp_path, "      bb: {path: /bb}\n")
    dispatcher.tick()  # the first look reads the file; from then on its signature is known
    path = tmp_path / "tenants.yaml"
    before = path.stat()
    path.write_text(BASE + "      bc: {path: /bc}\n")  # same length, same inode
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    dispatcher.tick()
    assert status(client, "/bc/") == 404  # looks unchanged: not re-read
    dispatcher.reload_now()
    dispatcher.tick()
    assert status(client, "/bc/") == 200
    assert status(client, "/bb/") == 404


def served_sha256(client: Client) -> str:
    health = client.get("/_dispatcher/health", headers={"Host": "localhost"})
    return str(health.json["tenants_file_sha256"])  # type: ignore[index]


def test_health_names_the_file_as_last_loaded(edit: Editor, tmp_path: Path) -> None:
    """DESIGN 13: the sha256 of the file's bytes; a valid edit changes it, an invalid one not."""
    path = tmp_path / "tenants.yaml"
    _, client = start(edit, tmp_path, "      acme: {path: /acme}\n")
    first = hashlib.sha256(path.read_bytes()).hexdigest()
    assert served_sha256(client) == first
    edit("      acme: {path: /acme}\n      globex: {path: /globex}\n")
    second = hashlib.sha256(path.read_bytes()).hexdigest()
    assert second != first
    assert served_sha256(client) == second
    edit("      acme: {pth: /acme}\n")  # invalid: still serving the second file
    assert served_sha256(client) == second
    assert status(client, "/globex/") == 200


def test_sha256_is_of_the_bytes_even_with_crlf_newlines(edit: Editor, tmp_path: Path) -> None:
    """A file written on Windows: the hash is what `sha256sum` says, and the copy kept for
    `diff` (and for respawned workers) hashes the same."""
    dispatcher, client = start(edit, tmp_path, "      acme: {path: /acme}\n")
    path = tmp_path / "tenants.yaml"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    os.utime(path, (1_800_000_000, 1_800_000_000))
    dispatcher.tick()
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert served_sha256(client) == expected
    running = running_text(dispatcher.tenant_set)
    assert running is not None
    assert load_tenants(path, text=running).tenants_file_sha256 == expected


def test_what_a_reload_built_is_out_of_the_collectors_way(edit: Editor, tmp_path: Path) -> None:
    """The new tenant set, handles and routing table live until the next reload: frozen, as
    at boot, or every full collection (a busy worker runs one every second or so) walks them
    all, 10-15 ms at 10,000 tenants."""
    dispatcher, _ = start(edit, tmp_path, "      acme: {path: /acme}\n")
    edit("      acme: {path: /acme}\n      globex: {path: /globex, lazy: true}\n")
    tracked = {id(o) for o in gc.get_objects()}  # what collections walk (nothing frozen)
    globex = dispatcher.tenants["globex"]
    assert not {id(globex), id(globex.tenant), id(dispatcher.routes)} & tracked


def test_memory_freed_by_a_boot_or_a_reload_is_given_back_once(
    edit: Editor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first tick of a new table (its first flush wrote every tenant's state), the
    heap's free pages go back to the system: once per boot or reload, not every second."""
    released: list[None] = []
    monkeypatch.setattr(collector, "release_free_memory", lambda: released.append(None))
    dispatcher, _ = start(edit, tmp_path, "      acme: {path: /acme}\n")
    dispatcher.tick()
    dispatcher.tick()
    assert len(released) == 1
    edit("      acme: {path: /acme}\n      globex: {path: /globex}\n")  # (ticks once)
    dispatcher.tick()
    assert len(released) == 2


def test_giving_memory_back_is_skipped_where_the_c_library_cannot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_such_call(name: object) -> object:
        raise OSError("musl: no malloc_trim")

    monkeypatch.setattr(collector.ctypes, "CDLL", no_such_call)
    monkeypatch.setattr(collector, "_trim", None)
    collector.release_free_memory()  # nothing raised
    assert collector._trim is False


def test_apps_a_reload_replaced_are_reclaimed_though_frozen(edit: Editor, tmp_path: Path) -> None:
    """Apps are frozen after their build (gc.freeze: full collections never scan them again),
    so the ones a reload replaces are only reclaimed by the background thread's own collection
    once enough were closed: memory does not grow with every edit."""
    names = [f"t{i}" for i in range(20)]
    app = '"tests.apps.hostile:ordinary"'  # its views refer to the app: a reference cycle
    lines = [f"      {n}: {{path: /{n}, app: {app}}}\n" for n in names]
    dispatcher, _ = start(edit, tmp_path, "".join(lines))
    old = [weakref.ref(dispatcher.tenants[n].app) for n in names]  # type: ignore[arg-type]
    edit("".join(line.replace("}\n", ", config: {X: 1}}\n") for line in lines))
    assert all(dispatcher.tenants[n].app is not None for n in names)  # the new ones
    dispatcher.tick()
    assert [ref() for ref in old] == [None] * len(names)
