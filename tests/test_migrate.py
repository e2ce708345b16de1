"""Per-tenant schema migrations: new tenants at head, `migrate` upgrading every tenant.

The tests run a copy of the notes app (with its real migrations) under a fresh package name in
tmp_path, so a test can add a migration to it without touching the repository.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from werkzeug.test import Client

from dispatcher import Dispatcher, load_tenants, migrate
from dispatcher.cli import main
from tests.conftest import ROOT

HEAD = "29d17d897b21"  # tenants/notes/migrations/versions/0001_users_and_notes.py
PINNED = '''"""notes can be pinned"""

from __future__ import annotations

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
def notes_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The notes app copied to tmp_path as a package of its own; returns its import name."""
    name = f"notes_{uuid.uuid4().hex[:8]}"
    shutil.copytree(ROOT / "tenants" / "notes", tmp_path / "apps" / name)
    monkeypatch.syspath_prepend(str(tmp_path / "apps"))
    return name


@pytest.fixture
def tenants_file(notes_copy: str, write_tenants: Callable[[str], Path]) -> Path:
    return write_tenants(
        f"""
        version: 1
        server_names: [localhost]
        defaults: {{app: {notes_copy}, mount: path}}
        tenants:
          acme:
          globex:
          initech:
        """
    )


def revision(tmp_path: Path, tenant: str) -> str | None:
    with sqlite3.connect(tmp_path / "instance" / tenant / "app.db") as db:
        row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def boot(tenants_file: Path) -> None:
    """Serve the file once, as a server does at boot: every tenant's database is created at
    head. The dispatcher is closed again (no background thread outlives the test)."""
    Dispatcher(load_tenants(tenants_file), watch=False, background=False).close()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_new_tenant_is_created_at_head(tenants_file: Path, tmp_path: Path) -> None:
    boot(tenants_file)
    assert {revision(tmp_path, t) for t in ("acme", "globex", "initech")} == {HEAD}


def test_migrate_up_to_date_is_quick_and_changes_nothing(tenants_file: Path) -> None:
    boot(tenants_file)
    code, output = run("-f", str(tenants_file), "migrate", "--all")
    assert code == 0, output
    assert f"acme  {HEAD} -> {HEAD}" in output
    assert output.count("up to date") == 4  # three tenants and the summary
    assert "3 tenant(s) in" in output
    # The databases are in WAL mode and no server has them open: reading them left no
    # -wal/-shm files behind (32 KiB each, per tenant).
    instance = tenants_file.parent / "instance"
    assert sorted(p.name for p in instance.glob("*/app.db*")) == ["app.db"] * 3


def test_a_revision_still_in_the_wal_is_the_one_read(tenants_file: Path, tmp_path: Path) -> None:
    """A server holding a tenant's database open keeps recent commits in its -wal file; the
    revision there, not the older one in the database file, decides."""
    boot(tenants_file)
    database = tmp_path / "instance" / "globex" / "app.db"
    server = sqlite3.connect(database)
    try:
        server.execute("PRAGMA wal_autocheckpoint = 0")  # the commit stays in the -wal
        with server:
            server.execute("UPDATE alembic_version SET version_num = 'older'")
        in_file = f"file:{database}?mode=ro&immutable=1"  # the file alone, -wal ignored
        with contextlib.closing(sqlite3.connect(in_file, uri=True)) as file_only:
            assert file_only.execute("SELECT version_num FROM alembic_version").fetchone() == (
                HEAD,
            )
        code, output = run("-f", str(tenants_file), "migrate", "--all", "--dry-run")
    finally:
        server.close()
    assert code == 0, output
    assert f"globex  older -> {HEAD}" in output and "would upgrade" in output
    assert output.count("up to date") == 2 + 1  # acme, initech, and the summary


def test_new_migration_upgrades_every_tenant_past_a_broken_one(
    tenants_file: Path, tmp_path: Path, notes_copy: str
) -> None:
    boot(tenants_file)
    (tmp_path / "instance" / "globex" / "app.db").write_bytes(b"this is not a database" * 100)
    versions = tmp_path / "apps" / notes_copy / "migrations" / "versions"
    (versions / "0002_pinned.py").write_text(PINNED)
    code, output = run("-f", str(tenants_file), "migrate", "--all")
    assert code == 1
    assert f"acme  {HEAD} -> 0002_pinned" in output and "ok" in output
    assert f"initech  {HEAD} -> 0002_pinned" in output
    assert "globex" in output and "failed" in output
    assert "migration failed for globex" in output
    assert revision(tmp_path, "acme") == revision(tmp_path, "initech") == "0002_pinned"
    with sqlite3.connect(tmp_path / "instance" / "acme" / "app.db") as db:
        assert "pinned" in {row[1] for row in db.execute("PRAGMA table_info(notes)")}


def test_dry_run_changes_nothing(tenants_file: Path, tmp_path: Path, notes_copy: str) -> None:
    boot(tenants_file)
    (tmp_path / "apps" / notes_copy / "migrations" / "versions" / "0002_pinned.py").write_text(
        PINNED
    )
    code, output = run("-f", str(tenants_file), "migrate", "acme", "--dry-run")
    assert code == 0, output
    assert "would upgrade" in output
    assert revision(tmp_path, "acme") == HEAD


def test_parallel_jobs(tenants_file: Path, tmp_path: Path, notes_copy: str) -> None:
    boot(tenants_file)
    (tmp_path / "apps" / notes_copy / "migrations" / "versions" / "0002_pinned.py").write_text(
        PINNED
    )
    code, output = run("-f", str(tenants_file), "migrate", "--all", "--jobs", "2")
    assert code == 0, output
    assert {revision(tmp_path, t) for t in ("acme", "globex", "initech")} == {"0002_pinned"}


def test_tenant_answers_503_while_its_migration_runs(
    tenants_file: Path, tmp_path: Path, notes_copy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher = Dispatcher(load_tenants(tenants_file), background=False)
    client = Client(dispatcher)

    def status(tenant: str) -> int:
        dispatcher.tick()  # what the dispatcher's thread does once a second
        return client.get(f"/{tenant}/auth/login", headers={"Host": "localhost"}).status_code

    seen: list[tuple[int, int]] = []
    real_upgrade = migrate.upgrade_to_head

    def observed_upgrade(app: object) -> None:
        seen.append((status("acme"), status("globex")))
        real_upgrade(app)  # type: ignore[arg-type]

    monkeypatch.setattr(migrate, "upgrade_to_head", observed_upgrade)
    (tmp_path / "apps" / notes_copy / "migrations" / "versions" / "0002_pinned.py").write_text(
        PINNED
    )
    code, output = run("-f", str(tenants_file), "migrate", "acme")
    assert code == 0, output
    assert seen == [(503, 200)]  # acme held, globex serving
    assert status("acme") == 200  # released afterwards


def test_unknown_tenant_and_no_selection_are_usage_errors(tenants_file: Path) -> None:
    assert run("-f", str(tenants_file), "migrate")[0] == 2
    code, output = run("-f", str(tenants_file), "migrate", "nope")
    assert code == 2 and "nope" in output


def test_list_shows_revisions_holds_and_built_states(tenants_file: Path, tmp_path: Path) -> None:
    code, output = run("-f", str(tenants_file), "list")
    assert code == 0, output
    assert {line.split()[-2] for line in output.splitlines()[1:]} == {"(new)"}
    boot(tenants_file)
    holds = tmp_path / "instance" / ".maintenance"
    holds.mkdir()
    (holds / "globex").write_text("migrating\n")
    (tmp_path / "instance" / "initech" / "config.py").write_text("raise RuntimeError('bad')\n")
    code, output = run("-f", str(tenants_file), "list", "--build")
    assert code == 0, output
    rows = {line.split()[0]: line for line in output.splitlines()[1:]}
    assert rows["acme"].split()[-2:] == [HEAD, "ready"]
    assert rows["globex"].split()[-1] == "maintenance"
    assert "failed: its factory" in rows["initech"]
    assert "raised RuntimeError: bad" in rows["initech"]


# -- tenants at head are not built ----------------------------------------------------------


def test_a_symlinked_database_is_read_through_the_wal_beside_its_target(
    tenants_file: Path, tmp_path: Path
) -> None:
    """An app.db that links to a file elsewhere in the instance folder (which isolation
    allows) has its -wal beside that file, where SQLite writes it: that one decides."""
    boot(tenants_file)
    folder = tmp_path / "instance" / "globex"
    (folder / "data").mkdir()
    os.replace(folder / "app.db", folder / "data" / "app.db")
    os.symlink("data/app.db", folder / "app.db")
    server = sqlite3.connect(folder / "app.db")
    try:
        server.execute("PRAGMA wal_autocheckpoint = 0")  # the commit stays in the -wal
        with server:
            server.execute("UPDATE alembic_version SET version_num = 'older'")
        assert (folder / "data" / "app.db-wal").exists()
        code, output = run("-f", str(tenants_file), "migrate", "--all", "--dry-run")
    finally:
        server.close()
    assert code == 0, output
    assert f"globex  older -> {HEAD}" in output and "would upgrade" in output


def log_builds(package: Path, log: Path) -> None:
    """Make the copied app append a line to ``log`` each time its factory runs."""
    init = package / "__init__.py"
    source = init.read_text()
    marker = "    app = Flask("
    record = f"    with open({str(log)!r}, 'a') as log:\n        log.write('built\\n')\n"
    init.write_text(source.replace(marker, record + marker, 1))


def test_tenants_at_head_are_told_without_importing_or_building_their_app(
    tenants_file: Path, tmp_path: Path, notes_copy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    boot(tenants_file)
    log = tmp_path / "builds.log"
    log_builds(tmp_path / "apps" / notes_copy, log)
    for module in [m for m in sys.modules if m.split(".")[0] == notes_copy]:
        monkeypatch.delitem(sys.modules, module)
    for jobs in ("1", "2"):
        code, output = run("-f", str(tenants_file), "migrate", "--all", "--jobs", jobs)
        assert code == 0, output
        assert output.count(f"{HEAD} -> {HEAD}") == 3, output
        assert "3 tenant(s) in" in output and "3 up to date" in output
    assert not log.exists()  # no factory ran
    assert notes_copy not in sys.modules  # nor was the tenant package imported


def test_only_the_tenants_behind_are_built(
    tenants_file: Path, tmp_path: Path, notes_copy: str
) -> None:
    log = tmp_path / "builds.log"
    log_builds(tmp_path / "apps" / notes_copy, log)
    boot(tenants_file)
    log.unlink()  # the three builds of the dispatcher's boot
    with sqlite3.connect(tmp_path / "instance" / "globex" / "app.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'older'")
    code, output = run("-f", str(tenants_file), "migrate", "--all", "--dry-run")
    assert code == 0, output
    assert f"globex  older -> {HEAD}" in output and "would upgrade" in output
    assert output.count("up to date") == 2 + 1  # acme, initech, and the summary
    assert log.read_text() == "built\n"  # globex alone
    assert revision(tmp_path, "globex") == "older"  # a dry run changes nothing


def test_a_tenant_whose_database_does_not_exist_yet_is_created_at_head(
    tenants_file: Path, tmp_path: Path
) -> None:
    code, output = run("-f", str(tenants_file), "migrate", "acme")
    assert code == 0, output
    assert f"acme  (empty) -> {HEAD}" in output and "ok" in output
    assert revision(tmp_path, "acme") == HEAD


def test_migrations_kept_elsewhere_than_the_convention_are_found_by_building(
    tenants_file: Path, tmp_path: Path, notes_copy: str
) -> None:
    """An app whose Migrate(directory=...) is not <package>/migrations/ still migrates: with
    nothing at the conventional place, the dispatcher builds the app and asks it."""
    package = tmp_path / "apps" / notes_copy
    (package / "migrations").rename(package / "schema")
    init = package / "__init__.py"
    init.write_text(init.read_text().replace('with_name("migrations")', 'with_name("schema")'))
    boot(tenants_file)
    (package / "schema" / "versions" / "0002_pinned.py").write_text(PINNED)
    code, output = run("-f", str(tenants_file), "migrate", "--all")
    assert code == 0, output
    assert {revision(tmp_path, t) for t in ("acme", "globex", "initech")} == {"0002_pinned"}
    code, output = run("-f", str(tenants_file), "migrate", "--all")
    assert code == 0 and output.count("0002_pinned -> 0002_pinned") == 3, output


def test_app_without_migrations(write_tenants: Callable[[str], Path]) -> None:
    file = write_tenants(
        """
        version: 1
        server_names: [localhost]
        tenants:
          acme: {path: /acme, app: tests.apps.echo}
        """
    )
    code, output = run("-f", str(file), "migrate", "--all")
    assert code == 0, output
    assert "acme  (empty) -> (empty)" in output and "no migrations" in output


def test_postgresql_tenants_at_head_and_behind(
    notes_copy: str, write_tenants: Callable[[str], Path], tmp_path: Path, pg_prefix: str
) -> None:
    """The revision is read over a plain connection on PostgreSQL too; a tenant behind is
    built and upgraded, a database that does not exist fails alone."""
    file = write_tenants(
        f"""
        version: 1
        server_names: [localhost]
        defaults:
          app: {notes_copy}
          mount: path
          database: postgresql://postgres@127.0.0.1:5432/{pg_prefix}{{name}}
        tenants:
          acme:
          globex:
          initech:
        """
    )
    log = tmp_path / "builds.log"
    log_builds(tmp_path / "apps" / notes_copy, log)
    assert run("-f", str(file), "init-db", "acme", "globex")[0] == 0
    (tmp_path / "apps" / notes_copy / "migrations" / "versions" / "0002_pinned.py").write_text(
        PINNED
    )
    assert run("-f", str(file), "migrate", "acme")[0] == 0
    log.unlink()
    code, output = run("-f", str(file), "migrate", "--all")
    assert code == 1, output
    assert "acme  0002_pinned -> 0002_pinned" in output and "up to date" in output
    assert f"globex  {HEAD} -> 0002_pinned" in output
    assert "initech" in output and "failed" in output  # its database was never created
    assert log.read_text() == "built\n" * 2  # globex and initech, not acme
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=f"{pg_prefix}globex") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == ("0002_pinned",)
