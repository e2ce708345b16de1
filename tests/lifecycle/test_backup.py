"""``python -m dispatcher backup`` on SQLite: one verified archive per tenant, taken while the
tenant serves, never a half-written one under its final name (DESIGN section 12, issue 13).

A full disk is simulated two ways: a write that fails with ENOSPC at a chosen byte (always
runs), and a real tmpfs too small for the archive (needs root to mount; skipped otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

from dispatcher import backup_archive, load_tenants
from dispatcher.backup import backup_tenant, default_folder
from dispatcher.backup_archive import Manifest, open_archive, sha256_of, write_archive

from .helpers import (
    SQLITE_TENANTS,
    Tenants,
    archive_path,
    cli,
    failed_cleanly,
    items,
    manifest,
    state,
)

WriteTenants = Callable[..., Path]


def test_backup_writes_one_verified_archive_per_tenant(tenants: Tenants, tmp_path: Path) -> None:
    tenants.add("acme", "one", "two", "three")
    folder = tenants.folder("acme")
    (folder / "config.py").write_text("SITE_NAME = 'Acme'\n")
    (folder / "uploads").mkdir()
    (folder / "uploads" / "photo.bin").write_bytes(os.urandom(5000))
    (folder / "link").symlink_to("/etc/hostname")

    result = cli(tenants.file, "backup", "acme", "globex")

    assert result.exit_code == 0, result.output
    backups = Path(tenants.set.instance_root) / ".backups"
    archive = archive_path(result, "acme")
    assert archive.parent == backups
    assert archive.name.startswith("acme-") and archive.name.endswith("Z.tar.gz")
    assert "(1 table(s), 3 row(s), 3 file(s)" in result.output
    assert f"acme: left out {folder / 'link'}: not a plain file" in result.output
    assert stat.S_IMODE(backups.stat().st_mode) == 0o700
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    found = manifest(archive)
    assert (found["tenant"], found["app"], found["backend"], found["dump"]) == (
        "acme",
        "tests.apps.echo",
        "sqlite",
        "sqlite",
    )
    assert found["tables"] == {"item": 3} and found["revision"] is None
    # The instance files, and never the database, its journals or the dispatcher's lock.
    assert set(found["members"]) == {
        "database.sqlite3",
        "files/config.py",
        "files/secret_key",
        "files/uploads/photo.bin",
    }
    assert (folder / ".build.lock").exists() and (folder / "app.db-wal").exists()
    opened = open_archive(str(archive), str(tmp_path / "staged"))
    assert items(Path(opened.staged["database.sqlite3"])) == ["one", "two", "three"]
    staged_photo = Path(opened.staged["files/uploads/photo.bin"])
    assert staged_photo.read_bytes() == (folder / "uploads" / "photo.bin").read_bytes()
    # Self-contained: a plain rollback-journal database, no WAL to go with it.
    with contextlib.closing(sqlite3.connect(opened.staged["database.sqlite3"])) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert manifest(archive_path(result, "globex"))["tables"] == {"item": 0}
    assert sorted(p.name for p in backups.iterdir()) == sorted(
        [archive.name, archive_path(result, "globex").name]
    ), "no temporary file may be left"


def test_backup_all_takes_maintenance_tenants_and_skips_what_never_served(
    write_tenants: WriteTenants,
) -> None:
    file = write_tenants(SQLITE_TENANTS.replace("/umbrella}", "/umbrella, lazy: true}"))
    served = Tenants(file)
    served.add("acme", "a")
    served.close()
    file.write_text(file.read_text().replace("/acme}", "/acme, maintenance: true}"))

    result = cli(file, "backup", "--all")

    assert result.exit_code == 0, result.output
    assert manifest(archive_path(result, "acme"))["tables"] == {"item": 1}
    assert manifest(archive_path(result, "initech"))["app"] == "tenants.tasks"
    assert archive_path(result, "globex")
    assert "umbrella: skipped, nothing to back up yet (it never served)" in result.output
    assert "hooli" not in result.output  # disabled: not in --all


def test_backup_skips_a_tenant_that_never_served(write_tenants: WriteTenants) -> None:
    file = write_tenants(SQLITE_TENANTS)
    result = cli(file, "backup", "acme")
    assert result.exit_code == 0, result.output
    assert "acme: skipped, nothing to back up yet (it never served)" in result.output
    assert not (file.parent / "instance" / ".backups").exists() or not any(
        (file.parent / "instance" / ".backups").iterdir()
    )


def test_backup_of_a_disabled_tenant_by_name(tenants: Tenants) -> None:
    hooli = tenants.folder("hooli")
    hooli.mkdir()
    (hooli / "config.py").write_text("X = 1\n")
    result = cli(tenants.file, "backup", "hooli")
    assert result.exit_code == 0, result.output
    found = manifest(archive_path(result, "hooli"))
    assert found["dump"] is None and set(found["members"]) == {"files/config.py"}


def test_backup_all_continues_past_a_failure_and_names_it(tenants: Tenants) -> None:
    tenants.add("acme", "kept")
    tenants.close()
    database = tenants.folder("globex") / "app.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    database.write_bytes(b"this is not a database" * 200)

    result = cli(tenants.file, "backup", "--all")

    failed_cleanly(result, 1, "globex: failed: ", "not a database", "backup failed for globex")
    assert manifest(archive_path(result, "acme"))["tables"] == {"item": 1}
    assert archive_path(result, "umbrella")
    backups = Path(tenants.set.instance_root) / ".backups"
    assert not [p for p in backups.iterdir() if p.name.startswith((".", "globex"))]


def test_backup_to_another_folder(tenants: Tenants, tmp_path: Path) -> None:
    tenants.add("acme", "x")
    result = cli(tenants.file, "backup", "acme", "--to", str(tmp_path / "offsite" / "daily"))
    assert result.exit_code == 0, result.output
    assert archive_path(result, "acme").parent == tmp_path / "offsite" / "daily"


def test_backup_into_the_tenants_own_folder_is_refused(tenants: Tenants) -> None:
    tenants.add("acme", "a")
    before = state(Path(tenants.set.instance_root))
    inside = str(tenants.folder("acme") / "backups")
    result = cli(tenants.file, "backup", "acme", "--to", inside)
    failed_cleanly(result, 1, "is inside tenant 'acme''s instance folder", "Choose a folder")
    assert state(Path(tenants.set.instance_root)) == before


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nosuch"], ["No tenant named 'nosuch'"]),
        ([], ["Name one or more tenants, or pass --all"]),
        (["acme", "--all"], ["Name one or more tenants, or pass --all"]),
    ],
)
def test_backup_usage_mistakes(tenants: Tenants, args: list[str], words: list[str]) -> None:
    before = state(Path(tenants.set.instance_root))
    failed_cleanly(cli(tenants.file, "backup", *args), 2, *words)
    assert state(Path(tenants.set.instance_root)) == before


def test_an_archive_name_is_never_reused(tmp_path: Path) -> None:
    source = tmp_path / "data"
    source.write_bytes(b"x" * 100)
    blank = Manifest("acme", "tests.apps.echo", "sqlite", None, None, {})
    first, _ = write_archive(str(tmp_path), "acme-1", blank, {"files/data": str(source)})
    second, _ = write_archive(str(tmp_path), "acme-1", blank, {"files/data": str(source)})
    assert (Path(first).name, Path(second).name) == ("acme-1.tar.gz", "acme-1-1.tar.gz")


# --- consistency under writes ------------------------------------------------------------


def test_backup_under_concurrent_writes_is_a_state_the_tenant_was_in(
    tenants: Tenants, tmp_path: Path
) -> None:
    """Each writer transaction adds one row to two tables; every archive must hold as many
    rows in one as in the other, the very same ones, while writes keep succeeding."""
    tenants.add("acme", "first")
    database = tenants.folder("acme") / "app.db"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
        db.execute("INSERT INTO ledger (text) VALUES ('first')")
        db.commit()
    stop, errors, written = threading.Event(), [], [0]

    def write(writer: int) -> None:
        db = sqlite3.connect(database, timeout=10, isolation_level=None)
        try:
            n = 0
            while not stop.is_set():
                text = f"{writer}-{n}"
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO item (text) VALUES (?)", (text,))
                db.execute("INSERT INTO ledger (text) VALUES (?)", (text,))
                db.execute("COMMIT")
                written[0] += 1
                n += 1
        except Exception as e:  # reported below: a write must never fail during a backup
            errors.append(e)
        finally:
            db.close()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    taken = []
    try:
        for _ in range(6):
            mark = written[0]
            taken.append(backup_tenant(tenants.set["acme"], str(tmp_path / "backups")))
            while written[0] < mark + 20 and not errors:  # writes went on meanwhile
                threading.Event().wait(0.005)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors
    counts = [t.manifest.tables for t in taken]
    assert all(c["item"] == c["ledger"] for c in counts), counts
    assert [c["item"] for c in counts] == sorted({c["item"] for c in counts}), counts
    for number, archive in enumerate(taken):
        staged = open_archive(archive.path, str(tmp_path / f"staged{number}")).staged
        with contextlib.closing(sqlite3.connect(staged["database.sqlite3"])) as db:
            item = [r[0] for r in db.execute("SELECT text FROM item ORDER BY text")]
            ledger = [r[0] for r in db.execute("SELECT text FROM ledger ORDER BY text")]
        assert item == ledger and len(item) == archive.manifest.tables["item"]


# --- a full disk ---------------------------------------------------------------------------


class FillsUp:
    """A file with room for ``room`` bytes; the next write fails as a full disk does."""

    def __init__(self, f: IO[bytes], room: int) -> None:
        self.f, self.room = f, room

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.f.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def __enter__(self) -> FillsUp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


@pytest.mark.parametrize("share", [0.0, 0.5, 0.99])
def test_disk_full_while_writing_leaves_no_archive_and_the_data_alone(
    tenants: Tenants, monkeypatch: pytest.MonkeyPatch, share: float
) -> None:
    tenants.add("acme", *(secrets.token_hex(200) for _ in range(200)))
    whole = archive_path(cli(tenants.file, "backup", "acme"), "acme")
    size = whole.stat().st_size
    whole.unlink()
    root = Path(tenants.set.instance_root)
    before = state(root)
    real = backup_archive.create
    monkeypatch.setattr(backup_archive, "create", lambda p: FillsUp(real(p), int(size * share)))

    result = cli(tenants.file, "backup", "acme")

    failed_cleanly(result, 1, "acme: failed: ", "no space left on the device; nothing was written")
    assert not list((root / ".backups").iterdir()), "neither an archive nor a temporary file"
    assert state(root) == before
    assert len(tenants.served("acme")) == 200


def fill(tenants: Tenants, tenant: str, kib: int) -> None:
    """About ``kib`` KiB of rows that do not compress (random text)."""
    tenants.add(tenant, *(secrets.token_urlsafe(750) for _ in range(kib)))


@pytest.mark.parametrize("where", ["database copy", "archive"])
def test_a_real_full_disk_leaves_nothing_behind(
    tenants: Tenants, small_disk: Callable[[int], Path], where: str
) -> None:
    fill(tenants, "acme", 600)
    database = (tenants.folder("acme") / "app.db").stat().st_size
    # Too small for the copy of the database, or room for it but not for the archive too.
    disk = small_disk(64 * 1024 if where == "database copy" else database + 128 * 1024)
    root = Path(tenants.set.instance_root)
    before = state(root)

    result = cli(tenants.file, "backup", "acme", "--to", str(disk))

    failed_cleanly(result, 1, "acme: failed: ", "no space left on the device")
    assert list(disk.iterdir()) == []
    assert state(root) == before
    assert len(tenants.served("acme")) == 600


def test_backup_reads_a_database_another_program_left_in_wal(
    tenants: Tenants, tmp_path: Path
) -> None:
    """Rows still only in the -wal file (no checkpoint yet) are in the archive."""
    tenants.add("acme", "a")
    database = tenants.folder("acme") / "app.db"
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("INSERT INTO item (text) VALUES ('only in the wal')")
        assert Path(f"{database}-wal").stat().st_size > 0
        taken = backup_tenant(load_tenants(tenants.file)["acme"], default_folder(str(tmp_path)))
    finally:
        writer.close()
    staged = open_archive(taken.path, str(tmp_path / "staged")).staged["database.sqlite3"]
    assert items(Path(staged)) == ["a", "only in the wal"]
    size, digest = sha256_of(staged)
    assert taken.manifest.members["database.sqlite3"] == {"size": size, "sha256": digest}
    shutil.rmtree(tmp_path / "staged")
