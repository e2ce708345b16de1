"""``restore`` and ``clone`` on SQLite: exactly the archived rows come back, into the live
database that running workers hold open, and every failure changes nothing (DESIGN 12).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatcher import load_tenants
from dispatcher.isolation import SECRET_KEY_FILE
from tests.conftest import ROOT

from .helpers import (
    SQLITE_TENANTS,
    Tenants,
    archive_path,
    cli,
    failed_cleanly,
    items,
    manifest,
    rewrite,
    state,
)

WriteTenants = Callable[..., Path]


def backup(tenants: Tenants, tenant: str = "acme") -> Path:
    result = cli(tenants.file, "backup", tenant)
    assert result.exit_code == 0, result.output
    return archive_path(result, tenant)


def test_round_trip_puts_back_exactly_the_archived_rows_and_files(tenants: Tenants) -> None:
    folder = tenants.folder("acme")
    tenants.add("acme", "one", "two", "three")
    (folder / "config.py").write_text("SITE_NAME = 'Acme'\n")
    (folder / "uploads").mkdir()
    (folder / "uploads" / "a.txt").write_text("archived upload")
    key = (folder / SECRET_KEY_FILE).read_text()
    archive = backup(tenants)
    tenants.add("acme", "four", "five")
    (folder / "config.py").write_text("SITE_NAME = 'Changed'\n")
    (folder / "uploads" / "a.txt").write_text("changed")
    (folder / "uploads" / "b.txt").write_text("added after the backup")
    (folder / SECRET_KEY_FILE).write_text("k" * 64)
    inode = (folder / "app.db").stat().st_ino

    result = cli(tenants.file, "restore", str(archive), "--force")

    assert result.exit_code == 0, result.output
    assert "acme has data (5 row(s) in item); backing it up first" in result.output
    assert "Restored into acme; rows per table, verified:\n  item           3" in result.output
    assert tenants.served("acme") == ["one", "two", "three"]
    assert (folder / "app.db").stat().st_ino == inode, "written into, never replaced"
    assert (folder / "config.py").read_text() == "SITE_NAME = 'Acme'\n"
    assert (folder / "uploads" / "a.txt").read_text() == "archived upload"
    assert not (folder / "uploads" / "b.txt").exists()
    assert (folder / SECRET_KEY_FILE).read_text() == key
    # What it replaced was backed up first, and can itself be restored.
    kept = next(line for line in result.output.splitlines() if "is kept in" in line).split()[-1]
    assert Path(kept).name.endswith("-before-restore.tar.gz")
    assert manifest(Path(kept))["tables"] == {"item": 5}
    again = cli(tenants.file, "restore", kept, "--force")
    assert again.exit_code == 0, again.output
    assert tenants.served("acme") == ["one", "two", "three", "four", "five"]
    assert (folder / "uploads" / "b.txt").exists()
    assert not list(Path(tenants.set.instance_root).glob(".restore-*")), "scratch removed"


def test_restore_into_a_tenant_without_data_needs_no_force(tenants: Tenants) -> None:
    tenants.add("acme", "one")
    archive = backup(tenants)
    tenants.close()
    for name in ("app.db", "app.db-wal", "app.db-shm"):
        (tenants.folder("acme") / name).unlink(missing_ok=True)
    result = cli(tenants.file, "restore", str(archive))
    assert result.exit_code == 0, result.output
    assert "backing it up first" not in result.output
    assert items(tenants.folder("acme") / "app.db") == ["one"]
    with contextlib.closing(sqlite3.connect(tenants.folder("acme") / "app.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_workers_holding_connections_serve_the_restored_rows_and_keep_their_writes(
    tenants: Tenants,
) -> None:
    """The running dispatcher keeps its pooled connection across the restore: it must see the
    restored rows, and what it writes afterwards must land in the file on disk."""
    tenants.add("acme", "archived")
    archive = backup(tenants)
    tenants.add("acme", "lost by the restore")
    assert tenants.served("acme") == ["archived", "lost by the restore"]
    assert cli(tenants.file, "restore", str(archive), "--force").exit_code == 0
    assert tenants.served("acme") == ["archived"]
    tenants.add("acme", "after the restore")
    tenants.close()
    assert items(tenants.folder("acme") / "app.db") == ["archived", "after the restore"]


def test_as_restores_the_data_into_another_tenant_keeping_its_own_secrets(
    tenants: Tenants,
) -> None:
    acme, globex = tenants.folder("acme"), tenants.folder("globex")
    tenants.add("acme", "a1", "a2")
    (acme / "config.py").write_text("SITE_NAME = 'Acme'\n")
    (acme / "logo.png").write_bytes(b"png")
    archive = backup(tenants)
    globex_key = (globex / SECRET_KEY_FILE).read_text()
    (globex / "config.py").write_text("SITE_NAME = 'Globex'\n")

    result = cli(tenants.file, "restore", str(archive), "--as", "globex")

    assert result.exit_code == 0, result.output
    assert tenants.served("globex") == ["a1", "a2"]
    assert (globex / "logo.png").read_bytes() == b"png"
    assert (
        (globex / SECRET_KEY_FILE).read_text() == globex_key != (acme / SECRET_KEY_FILE).read_text()
    )
    assert (globex / "config.py").read_text() == "SITE_NAME = 'Globex'\n"
    assert tenants.served("acme") == ["a1", "a2"]


def test_clone_copies_the_data_with_a_new_secret(tenants: Tenants) -> None:
    tenants.add("acme", "template row")
    (tenants.folder("acme") / "config.py").write_text("SITE_NAME = 'Acme'\n")
    tenants.close()
    for name in ("app.db", "app.db-wal", "app.db-shm", SECRET_KEY_FILE):
        (tenants.folder("umbrella") / name).unlink(missing_ok=True)

    result = cli(tenants.file, "clone", "acme", "umbrella")

    assert result.exit_code == 0, result.output
    assert "Cloned acme into umbrella; rows per table, verified:" in result.output
    assert items(tenants.folder("umbrella") / "app.db") == ["template row"]
    assert not (tenants.folder("umbrella") / "config.py").exists()
    fresh = Tenants(tenants.file)  # serves umbrella: it generates its own key
    assert fresh.served("umbrella") == ["template row"]
    keys = {(fresh.folder(t) / SECRET_KEY_FILE).read_text() for t in ("acme", "umbrella")}
    fresh.close()
    assert len(keys) == 2
    root = Path(tenants.set.instance_root)
    assert not (root / ".backups").exists(), "clone keeps no archive of its own"
    assert not list(root.glob(".clone-*")) and not list(root.glob(".restore-*"))


def test_clone_refuses_a_target_with_data(tenants: Tenants) -> None:
    tenants.add("acme", "a")
    tenants.add("globex", "g")
    before = state(Path(tenants.set.instance_root))
    result = cli(tenants.file, "clone", "acme", "globex")
    failed_cleanly(result, 1, "globex: not cloned: tenant 'globex' has data (1 row(s) in item)")
    assert state(Path(tenants.set.instance_root)) == before


def test_restore_into_a_database_of_another_page_size(tenants: Tenants) -> None:
    """SQLite refuses a backup into a WAL database of another page size: converted first."""
    tenants.add("acme", "a", "b")
    archive = backup(tenants)
    tenants.close()
    globex = tenants.folder("globex") / "app.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{globex}{suffix}").unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(globex)) as db:
        db.execute("PRAGMA page_size=8192")
        db.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, text VARCHAR NOT NULL)")
        db.execute("PRAGMA journal_mode=WAL")
    result = cli(tenants.file, "restore", str(archive), "--as", "globex")
    assert result.exit_code == 0, result.output
    assert items(globex) == ["a", "b"]
    with contextlib.closing(sqlite3.connect(globex)) as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == 8192


def test_one_restore_clone_or_archive_at_a_time(tenants: Tenants) -> None:
    """Another command holding the instance root: refused at once, nothing changed."""
    tenants.add("acme", "a")
    archive = backup(tenants)
    tenants.folder("hooli").mkdir()
    root = Path(tenants.set.instance_root)
    before = state(root)
    other = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        for args in (
            ["restore", str(archive), "--force"],
            ["clone", "acme", "umbrella"],
            ["archive", "hooli"],
        ):
            result = cli(tenants.file, *args)
            failed_cleanly(result, 1, f"another restore, clone or archive is running on {root}")
    finally:
        os.close(other)
    assert state(root) == before
    assert cli(tenants.file, "restore", str(archive), "--force").exit_code == 0  # free again


# --- every failure changes nothing --------------------------------------------------------


def corrupt(archive: Path, tmp_path: Path, how: str) -> Path:
    """The archive damaged or tampered with in one of the ways an operator may meet."""
    out = tmp_path / f"{how}.tar.gz"
    data = archive.read_bytes()
    if how == "not an archive":
        out.write_bytes(os.urandom(4000))
    elif how == "truncated":
        out.write_bytes(data[: len(data) // 2])
    elif how == "bit flipped":
        middle = len(data) // 2
        out.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif how == "database altered":
        staged = tmp_path / "altered.db"
        shutil.copy(ROOT / "pyproject.toml", staged)
        rewrite(archive, out, {"database.sqlite3": staged.read_bytes()})
    elif how == "member missing":
        rewrite(archive, out, {"files/secret_key": None})
    elif how == "no manifest":
        rewrite(archive, out, {"manifest.json": None})
    elif how == "newer format":
        found = manifest(archive) | {"version": 99}
        rewrite(archive, out, {"manifest.json": json.dumps(found).encode()})
    elif how == "version garbled":
        found = manifest(archive)
        found["versiom"] = found.pop("version")
        rewrite(archive, out, {"manifest.json": json.dumps(found).encode()})
    elif how == "path outside":
        found = manifest(archive)
        found["members"]["files/../../escaped"] = found["members"].pop("files/secret_key")
        rewrite(archive, out, {"manifest.json": json.dumps(found).encode()})
    elif how == "counts lie":
        found = manifest(archive)
        found["tables"] = {"item": 999}
        rewrite(archive, out, {"manifest.json": json.dumps(found).encode()})
    return out


@pytest.mark.parametrize(
    ("how", "words"),
    [
        ("not an archive", ["is not a readable backup archive (damaged or truncated"]),
        ("truncated", ["is not a readable backup archive (damaged or truncated"]),
        ("bit flipped", ["damaged"]),
        ("database altered", ["is damaged: 'database.sqlite3' does not match its checksum"]),
        ("member missing", ["is incomplete: files/secret_key missing"]),
        ("no manifest", ["is not a dispatcher backup (no manifest.json first)"]),
        ("newer format", ["was written by a newer dispatcher (archive format 99"]),
        ("version garbled", ["is damaged: its manifest.json is incomplete or malformed"]),
        ("path outside", ["is damaged: its manifest.json is incomplete or malformed"]),
        ("counts lie", ["its database does not hold the rows it lists"]),
    ],
)
def test_a_bad_archive_is_refused_before_anything_changes(
    tenants: Tenants, tmp_path: Path, how: str, words: list[str]
) -> None:
    tenants.add("acme", "archived")
    archive = backup(tenants)
    tenants.add("acme", "current")
    bad = corrupt(archive, tmp_path, how)
    root = Path(tenants.set.instance_root)
    before = state(root)

    result = cli(tenants.file, "restore", str(bad), "--force")

    failed_cleanly(result, 1, *words)
    assert state(root) == before
    assert tenants.served("acme") == ["archived", "current"]
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["restore", "{missing}"], 2, ["does not exist"]),
        (["restore", "{archive}", "--as", "nosuch"], 2, ["No tenant named 'nosuch'"]),
        (["restore", "{stranger}"], 2, ["No tenant named 'stranger'", "(the archive's tenant"]),
        (["restore", "{archive}", "--as", "initech"], 1, ["is of app 'tests.apps.echo'"]),
        (["restore", "{archive}", "--as", "globex"], 1, ["tenant 'globex' has data", "--force"]),
        (["clone", "nosuch", "globex"], 2, ["No tenant named 'nosuch'"]),
        (["clone", "acme", "nosuch"], 2, ["No tenant named 'nosuch'"]),
        (["clone", "acme", "acme"], 1, ["clone copies a tenant into another one"]),
        (["clone", "acme", "initech"], 1, ["tenant 'initech' runs 'tenants.tasks'"]),
    ],
)
def test_mistakes_are_refused_and_change_nothing(
    tenants: Tenants, tmp_path: Path, args: list[str], code: int, words: list[str]
) -> None:
    tenants.add("acme", "a")
    tenants.add("globex", "g")
    archive = backup(tenants)
    stranger = tmp_path / "stranger.tar.gz"
    found = manifest(archive) | {"tenant": "stranger"}
    rewrite(archive, stranger, {"manifest.json": json.dumps(found).encode()})
    paths = {"archive": archive, "stranger": stranger, "missing": tmp_path / "nope.tar.gz"}
    root = Path(tenants.set.instance_root)
    before = state(root)

    result = cli(tenants.file, *(arg.format(**paths) for arg in args))

    failed_cleanly(result, code, *words)
    assert state(root) == before


def test_a_failure_while_writing_the_database_puts_the_files_back(
    tenants: Tenants, small_disk: Callable[[int], Path], write_tenants: WriteTenants
) -> None:
    """Instance root on a small disk: the archive stages, but the database's new pages do not
    fit beside it. The instance files already swapped are put back; SQLite rolls back."""
    big = Tenants(write_tenants(SQLITE_TENANTS, name="big.yaml"))
    big.add("acme", *(os.urandom(600).hex() for _ in range(500)))
    (big.folder("acme") / "config.py").write_text("FROM_THE_ARCHIVE = 1\n")
    archive = archive_path(cli(big.file, "backup", "acme"), "acme")
    big.close()
    staged_size = manifest(archive)["members"]["database.sqlite3"]["size"]
    disk = small_disk(staged_size + 256 * 1024)
    file = write_tenants(
        SQLITE_TENANTS.replace("version: 1", f"version: 1\n    instance_root: {disk}")
    )
    small = Tenants(file)
    small.close()
    (small.folder("acme") / "config.py").write_text("SMALL = 1\n")
    before = state(disk)

    result = cli(file, "restore", str(archive), "--force")

    failed_cleanly(
        result, 1, "acme: not restored: cannot write into the SQLite database", "no space left"
    )
    assert state(disk, leave_out=(".maintenance", ".backups")) == before
    (kept,) = (disk / ".backups").glob("acme-*-before-restore.tar.gz")  # kept all the same
    assert f"the copy of acme stays in {kept}" in result.output
    assert (small.folder("acme") / "config.py").read_text() == "SMALL = 1\n"
    assert not list(disk.glob(".restore-*"))


def test_a_full_disk_while_unpacking_changes_nothing(
    tenants: Tenants, small_disk: Callable[[int], Path], write_tenants: WriteTenants
) -> None:
    big = Tenants(write_tenants(SQLITE_TENANTS, name="big.yaml"))
    big.add("acme", *(os.urandom(600).hex() for _ in range(500)))
    archive = archive_path(cli(big.file, "backup", "acme"), "acme")
    big.close()
    disk = small_disk(256 * 1024)
    file = write_tenants(
        SQLITE_TENANTS.replace("version: 1", f"version: 1\n    instance_root: {disk}")
    )
    small = Tenants(file)
    small.add("acme", "small")
    small.close()
    before = state(disk)
    result = cli(file, "restore", str(archive), "--force")
    failed_cleanly(result, 1, "cannot unpack", "no space left on the device")
    assert state(disk) == before


# --- schema revisions ----------------------------------------------------------------------

HEAD = "29d17d897b21"  # tenants/notes/migrations/versions/0001_users_and_notes.py
PINNED = '''"""notes can be pinned"""
import sqlalchemy as sa
from alembic import op

revision = "0002_pinned"
down_revision = "29d17d897b21"


def upgrade() -> None:
    with op.batch_alter_table("notes") as batch:
        batch.add_column(sa.Column("pinned", sa.Boolean(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("notes") as batch:
        batch.drop_column("pinned")
'''


@pytest.fixture
def notes_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The notes app copied to tmp_path under a name of its own (a test adds migrations)."""
    name = f"notes_{uuid.uuid4().hex[:8]}"
    shutil.copytree(ROOT / "tenants" / "notes", tmp_path / "apps" / name)
    monkeypatch.syspath_prepend(str(tmp_path / "apps"))
    return tmp_path / "apps" / name


def notes_tenants(write_tenants: WriteTenants, package: str) -> Path:
    return write_tenants(
        f"""
        version: 1
        server_names: [localhost]
        defaults: {{app: {package}, mount: path}}
        tenants:
          acme:
        """
    )


def add_note(database: Path, title: str) -> None:
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("INSERT OR IGNORE INTO users (id, username, password_hash) VALUES (1, 'a', 'x')")
        db.execute(
            "INSERT INTO notes (user_id, title, body, created) VALUES (1, ?, '', '2026-01-01')",
            (title,),
        )
        db.commit()


def test_an_archive_older_than_the_code_is_upgraded_after_the_restore(
    notes_copy: Path, write_tenants: WriteTenants
) -> None:
    file = notes_tenants(write_tenants, notes_copy.name)
    served = Tenants(file)
    served.close()
    database = served.folder("acme") / "app.db"
    add_note(database, "from before the migration")
    archive = archive_path(cli(file, "backup", "acme"), "acme")
    assert manifest(archive)["revision"] == HEAD
    (notes_copy / "migrations" / "versions" / "0002_pinned.py").write_text(PINNED)
    assert cli(file, "migrate", "acme").exit_code == 0
    add_note(database, "after")

    result = cli(file, "restore", str(archive), "--force")

    assert result.exit_code == 0, result.output
    assert f"Schema upgraded from {HEAD} to 0002_pinned." in result.output
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0002_pinned"
        rows = db.execute("SELECT title, pinned FROM notes").fetchall()
    assert rows == [("from before the migration", 0)]


def test_an_archive_newer_than_the_code_is_refused(
    notes_copy: Path, write_tenants: WriteTenants
) -> None:
    file = notes_tenants(write_tenants, notes_copy.name)
    served = Tenants(file)
    served.close()
    database = served.folder("acme") / "app.db"
    add_note(database, "n")
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
        db.commit()
    archive = archive_path(cli(file, "backup", "acme"), "acme")
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute(f"UPDATE alembic_version SET version_num = '{HEAD}'")
        db.commit()
    before = state(Path(load_tenants(file).instance_root))
    result = cli(file, "restore", str(archive), "--force")
    failed_cleanly(
        result, 1, "its schema revision 0099_from_the_future is not among the app's migrations",
        "taken with newer code",
    )  # fmt: skip
    assert state(Path(load_tenants(file).instance_root)) == before


def forge(archive: Path, out: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of ``archive`` with members added, replaced or dropped (``None``) and its manifest
    made to match (checksums and sizes): a tampered archive that every checksum agrees with."""
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    found = json.loads(members.pop("manifest.json"))
    members.update(change)
    members = {name: data for name, data in members.items() if data is not None}
    found["members"] = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in members.items()
    }
    with tarfile.open(out, "w:gz") as new:
        for name, data in [("manifest.json", json.dumps(found).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            new.addfile(info, io.BytesIO(data))
    return out


@pytest.mark.parametrize("member", ["files/app.db", "files/app.db-wal", "files/.build.lock"])
def test_an_archive_holding_the_database_file_is_refused_and_the_target_keeps_its_data(
    tenants: Tenants, tmp_path: Path, member: str
) -> None:
    """`backup` never puts the live database (or its journals, or a lock) among the instance
    files: one that does would be moved over the target's database."""
    tenants.add("acme", "acme's")
    tenants.add("globex", "globex's")
    bad = forge(backup(tenants), tmp_path / "forged.tar.gz", {member: b"garbage"})
    root = Path(tenants.set.instance_root)
    before = state(root)

    result = cli(tenants.file, "restore", str(bad), "--as", "globex", "--force")

    failed_cleanly(result, 1, f"holds {member}", "no backup holds", "nothing was changed")
    assert state(root) == before
    assert tenants.served("globex") == ["globex's"]


def test_an_archive_without_its_dump_is_refused(tenants: Tenants, tmp_path: Path) -> None:
    tenants.add("acme", "acme's")
    bad = forge(backup(tenants), tmp_path / "no-dump.tar.gz", {"database.sqlite3": None})
    root = Path(tenants.set.instance_root)
    before = state(root)

    result = cli(tenants.file, "restore", str(bad), "--force")

    failed_cleanly(result, 1, "is incomplete", "names a sqlite dump", "holds no database.sqlite3")
    assert state(root) == before


@pytest.mark.parametrize("link", ["folder", "database file"])
def test_a_tenant_linked_to_another_is_not_backed_up_restored_or_cloned(
    tenants: Tenants, tmp_path: Path, link: str
) -> None:
    """umbrella's instance folder (or its app.db) is a symlink to acme's: backing it up would
    copy acme's data and secret, restoring or cloning into it overwrite acme's."""
    tenants.add("acme", "acme's")
    tenants.add("globex", "globex's")
    archive = backup(tenants, "globex")
    root = Path(tenants.set.instance_root)
    if link == "folder":
        shutil.rmtree(root / "umbrella")
        (root / "umbrella").symlink_to("acme")
    else:
        (root / "umbrella" / "app.db").unlink()
        (root / "umbrella" / "app.db").symlink_to(root / "acme" / "app.db")
    before = state(root)

    for args in (
        ["backup", "umbrella"],
        ["restore", str(archive), "--as", "umbrella", "--force"],
        ["clone", "globex", "umbrella"],
    ):
        result = cli(tenants.file, *args)
        failed_cleanly(result, 1, "tenant 'umbrella'", "resolves to", "nothing was changed")
        assert state(root) == before, args
    assert tenants.served("acme") == ["acme's"]
