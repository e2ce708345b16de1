"""Live reload of tenants.yaml inside one dispatcher (DESIGN section 6)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from dispatcher import Dispatcher, load_tenants, reload
from dispatcher.build import app_engines
from tests.conftest import Clock

BASE = """
    version: 1
    server_names: [localhost]
    defaults: {app: tests.apps.echo}
    tenants:
"""


@pytest.fixture
def edit(tmp_path: Path, clock: Clock) -> Iterator[Callable[[str], None]]:
    """Rewrite the tenants file with new tenant lines and let the check interval pass."""
    path = tmp_path / "tenants.yaml"
    generation = [0]

    def write(tenants: str) -> None:
        generation[0] += 1
        path.write_text(BASE + tenants)
        # Same-second edits must be seen too: push the mtime forward explicitly.
        stamp = 1_700_000_000 + generation[0]
        os.utime(path, (stamp, stamp))
        clock.now += reload.CHECK_INTERVAL + 0.1

    yield write


def start(edit: Callable[[str], None], tmp_path: Path, tenants: str) -> tuple[Dispatcher, Client]:
    edit(tenants)
    dispatcher = Dispatcher(load_tenants(tmp_path / "tenants.yaml"))
    return dispatcher, Client(dispatcher)


def status(client: Client, url: str) -> int:
    return client.get(url, headers={"Host": "localhost"}).status_code


def test_added_tenant_serves_and_removed_one_404s(
    edit: Callable[[str], None], tmp_path: Path
) -> None:
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


def test_unchanged_tenants_keep_their_app_and_pool(
    edit: Callable[[str], None], tmp_path: Path
) -> None:
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
    edit: Callable[[str], None], tmp_path: Path, caplog: pytest.LogCaptureFixture
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
    # The same broken file is not re-read and re-logged every second.
    caplog.clear()
    reload.time.monotonic.now += 5  # type: ignore[attr-defined]
    assert status(client, "/acme/") == 200
    assert not caplog.records


def test_file_is_checked_at_most_once_per_interval(
    edit: Callable[[str], None], tmp_path: Path, clock: Clock
) -> None:
    _, client = start(edit, tmp_path, "      acme: {path: /acme}\n")
    clock.now += reload.CHECK_INTERVAL + 0.1
    assert status(client, "/acme/") == 200  # the check is spent on this request
    (tmp_path / "tenants.yaml").write_text(
        BASE + "      acme: {path: /acme}\n      b: {path: /b}\n"
    )
    os.utime(tmp_path / "tenants.yaml", (1_800_000_000, 1_800_000_000))
    assert status(client, "/b/") == 404  # not looked at again within the interval
    clock.now += reload.CHECK_INTERVAL
    assert status(client, "/b/") == 200


def test_failed_tenant_is_retried_on_reload(edit: Callable[[str], None], tmp_path: Path) -> None:
    config = tmp_path / "instance" / "acme" / "config.py"
    config.parent.mkdir(parents=True)
    config.write_text("FAIL_TO_BUILD = True\n")
    _, client = start(edit, tmp_path, "      acme: {path: /acme}\n")
    assert status(client, "/acme/") == 503
    config.write_text("FAIL_TO_BUILD = False\n")
    edit("      acme: {path: /acme}\n")  # touched, unchanged
    assert status(client, "/acme/") == 200


def test_request_in_flight_finishes_on_the_set_it_started_on(
    edit: Callable[[str], None], tmp_path: Path
) -> None:
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
        assert status(client, "/acme/") == 200  # the reload happens on this request
        assert dispatcher.tenants["acme"].app is not old_app
    finally:
        release.set()
        thread.join(10)
    assert result == [{"app": id(old_app)}]


def test_maintenance_toggled_live(edit: Callable[[str], None], tmp_path: Path) -> None:
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
    changes = reload.compare(old, load_tenants(path))
    assert changes == reload.Changes(added=("d",), removed=("c",), changed=("b",), unchanged=("a",))
    assert str(changes) == "1 added, 1 removed, 1 rebuilt, 1 unchanged"


def test_diff_shows_what_a_reload_would_do(edit: Callable[[str], None], tmp_path: Path) -> None:
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


def test_a_requested_reload_rereads_an_unchanged_file(
    edit: Callable[[str], None], tmp_path: Path, clock: Clock
) -> None:
    """SIGHUP under `python -m dispatcher serve` calls request(): the file is re-read even
    when its time, size and inode look unchanged (two edits within one clock tick, say)."""
    dispatcher, client = start(edit, tmp_path, "      bb: {path: /bb}\n")
    path = tmp_path / "tenants.yaml"
    before = path.stat()
    path.write_text(BASE + "      bc: {path: /bc}\n")  # same length, same inode
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    clock.now += reload.CHECK_INTERVAL + 0.1
    assert status(client, "/bc/") == 404  # looks unchanged: not re-read
    assert dispatcher.reloader is not None
    dispatcher.reloader.request()
    assert status(client, "/bc/") == 200
    assert status(client, "/bb/") == 404


def served_sha256(client: Client) -> str:
    health = client.get("/_dispatcher/health", headers={"Host": "localhost"})
    return str(health.json["tenants_file_sha256"])  # type: ignore[index]


def test_health_names_the_file_as_last_loaded(edit: Callable[[str], None], tmp_path: Path) -> None:
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


def test_sha256_is_of_the_bytes_even_with_crlf_newlines(
    edit: Callable[[str], None], tmp_path: Path, clock: Clock
) -> None:
    """A file written on Windows: the hash is what `sha256sum` says, and the copy kept for
    `diff` (and for respawned workers) hashes the same."""
    dispatcher, client = start(edit, tmp_path, "      acme: {path: /acme}\n")
    path = tmp_path / "tenants.yaml"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    os.utime(path, (1_800_000_000, 1_800_000_000))
    clock.now += reload.CHECK_INTERVAL + 0.1
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert served_sha256(client) == expected
    running = reload.running_text(dispatcher.tenant_set)
    assert running is not None
    assert load_tenants(path, text=running).tenants_file_sha256 == expected
