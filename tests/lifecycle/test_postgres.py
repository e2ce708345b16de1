"""Backups and restores on PostgreSQL, against the real server at 127.0.0.1:5432, each test with
pg_dump and with the portable dump (forced with ``DISPATCHER_PG_DUMP=portable``).

Skipped with a reason when no server answers, except under CI=true, where they must run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from dispatcher.backup_postgres import TOOL_ENV
from tests.conftest import postgres

from .helpers import Tenants, archive_path, cli, failed_cleanly, manifest, rewrite, state

WriteTenants = Callable[..., Path]
SERVER = "postgresql://postgres@127.0.0.1:5432"


def tenants_text(prefix: str) -> str:
    return f"""
        version: 1
        server_names: [localhost]
        create_databases: true
        defaults:
          app: tests.apps.echo
          mount: path
          database: {SERVER}/{prefix}{{name}}
          pool: {{size: 2, max_overflow: 0}}
        tenants:
          acme:
          globex:
          umbrella: {{lazy: true}}
          initech: {{app: tenants.tasks}}
          hooli: {{enabled: false}}
    """


@pytest.fixture(params=["pg_dump", "portable"])
def dump(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs once with pg_dump and once with the portable dump."""
    if request.param == "portable":
        monkeypatch.setenv(TOOL_ENV, "portable")
    else:
        monkeypatch.delenv(TOOL_ENV, raising=False)
        if shutil.which("pg_dump") is None and os.environ.get("CI") != "true":
            pytest.skip("no pg_dump on this machine (apt-get install postgresql-client)")
    return str(request.param)


@pytest.fixture
def pg(pg_prefix: str, write_tenants: WriteTenants) -> Iterator[Tenants]:
    served = Tenants(write_tenants(tenants_text(pg_prefix)))
    yield served
    served.close()


def connect(prefix: str, tenant: str) -> psycopg.Connection:
    return psycopg.connect(f"{SERVER}/{prefix}{tenant}", autocommit=True)


def rows(prefix: str, tenant: str, query: str = "SELECT id, text FROM item ORDER BY id") -> list:
    with connect(prefix, tenant) as db:
        return db.execute(query).fetchall()


def databases(prefix: str) -> set[str]:
    with postgres() as db:
        found = db.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)
        ).fetchall()
    return {name.removeprefix(prefix) for (name,) in found}


def backup(pg: Tenants, tenant: str = "acme") -> Path:
    result = cli(pg.file, "backup", tenant)
    assert result.exit_code == 0, result.output
    return archive_path(result, tenant)


def test_round_trip(pg: Tenants, pg_prefix: str, dump: str) -> None:
    pg.add("acme", "one", "two", "three")
    archive = backup(pg)
    assert manifest(archive)["dump"] == dump
    assert manifest(archive)["tables"] == {"item": 3}
    pg.add("acme", "four", "five")
    for _ in range(8):  # the pooled connections prepare their statements server-side
        pg.served("acme")

    result = cli(pg.file, "restore", str(archive), "--force")

    assert result.exit_code == 0, result.output
    assert "acme has data (5 row(s) in item); backing it up first" in result.output
    assert pg.served("acme") == ["one", "two", "three"]  # the same pooled connections
    pg.add("acme", "after")
    assert rows(pg_prefix, "acme") == [(1, "one"), (2, "two"), (3, "three"), (4, "after")]

    result = cli(pg.file, "restore", str(archive), "--as", "globex")
    assert result.exit_code == 0, result.output
    assert pg.served("globex") == ["one", "two", "three"]
    result = cli(pg.file, "clone", "globex", "umbrella")  # umbrella's database is made for it
    assert result.exit_code == 0, result.output
    assert rows(pg_prefix, "umbrella") == rows(pg_prefix, "globex")


def test_backup_under_concurrent_writes_is_a_state_the_tenant_was_in(
    pg: Tenants, pg_prefix: str, dump: str
) -> None:
    with connect(pg_prefix, "acme") as db:
        db.execute("CREATE TABLE ledger (id serial PRIMARY KEY, text text NOT NULL)")
    stop, errors, written = threading.Event(), [], [0]

    def write(writer: int) -> None:
        try:
            with connect(pg_prefix, "acme") as db:
                n = 0
                while not stop.is_set():
                    with db.transaction():
                        db.execute("INSERT INTO item (text) VALUES (%s)", (f"{writer}-{n}",))
                        db.execute("INSERT INTO ledger (text) VALUES (%s)", (f"{writer}-{n}",))
                    written[0] += 1
                    n += 1
        except Exception as e:  # a write must never fail because of a backup
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    archives = []
    try:
        while written[0] < 10 and not errors:
            threading.Event().wait(0.005)
        for _ in range(4):
            mark = written[0]
            archives.append(backup(pg))
            while written[0] < mark + 20 and not errors:
                threading.Event().wait(0.005)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors
    counts = [manifest(a)["tables"] for a in archives]
    assert all(c["item"] == c["ledger"] > 0 for c in counts), counts
    assert [c["item"] for c in counts] == sorted({c["item"] for c in counts})
    result = cli(pg.file, "restore", str(archives[-1]), "--as", "globex")
    assert result.exit_code == 0, result.output
    texts = [
        rows(pg_prefix, "globex", f"SELECT text FROM {table} ORDER BY text")
        for table in ("item", "ledger")
    ]
    assert texts[0] == texts[1] and len(texts[0]) == counts[-1]["item"]


RICH_SCHEMA = r"""
CREATE SCHEMA audit;
CREATE TABLE audit.events (
    id bigint GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 5) PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    kind text COLLATE "C" CHECK (kind <> ''),
    payload jsonb,
    item_id integer REFERENCES public.item (id) ON DELETE SET NULL
);
CREATE UNIQUE INDEX events_kind_at ON audit.events (kind, at DESC) WHERE kind IS NOT NULL;
CREATE SEQUENCE public.invoice_numbers START 1000;
CREATE UNLOGGED TABLE public.cache (
    key text PRIMARY KEY, value bytea, n numeric(10,2) DEFAULT 0.5, tags text[]
);
CREATE TABLE public."Odd Name" (
    "Mixed Case" int, "select" text UNIQUE, EXCLUDE USING btree ("Mixed Case" WITH =)
);
INSERT INTO public.item (text) VALUES (E'tab\tand\nnewline'), (E'back\\slash');
INSERT INTO audit.events (kind, payload, item_id) VALUES ('a', '{"x": [1, 2]}', 1), ('b', NULL, 2);
INSERT INTO public.cache VALUES ('k', '\x00ff', 1.25, ARRAY['x', 'y z']);
INSERT INTO public."Odd Name" VALUES (1, 'from');
SELECT nextval('public.invoice_numbers'), nextval('public.invoice_numbers');
"""


def pg_dump_text(prefix: str, tenant: str) -> str:
    """pg_dump's view of a database (schema and rows), without its per-run key lines."""
    done = subprocess.run(
        ["pg_dump", "--no-owner", "--no-privileges", f"{SERVER}/{prefix}{tenant}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return re.sub(r"^\\(un)?restrict .*$", "", done.stdout, flags=re.M)


def test_the_portable_dump_reproduces_what_pg_dump_sees(
    pg: Tenants, pg_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("pg_dump") is None and os.environ.get("CI") != "true":
        pytest.skip("pg_dump is the reference here (apt-get install postgresql-client)")
    with connect(pg_prefix, "acme") as db:
        db.execute(RICH_SCHEMA)
    monkeypatch.setenv(TOOL_ENV, "portable")
    archive = backup(pg)
    assert manifest(archive)["dump"] == "portable"
    result = cli(pg.file, "restore", str(archive), "--as", "globex")
    assert result.exit_code == 0, result.output
    assert pg_dump_text(pg_prefix, "globex") == pg_dump_text(pg_prefix, "acme")


def test_the_portable_dump_refuses_what_it_does_not_cover(
    pg: Tenants, pg_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.add("acme", "a")
    with connect(pg_prefix, "acme") as db:
        db.execute("CREATE VIEW recent AS SELECT text FROM item")
    monkeypatch.setenv(TOOL_ENV, "portable")
    backups = Path(pg.set.instance_root) / ".backups"
    result = cli(pg.file, "backup", "acme")
    failed_cleanly(result, 1, "acme: failed: the portable dump covers", "view public.recent")
    assert not list(backups.iterdir())
    if shutil.which("pg_dump") is not None:  # pg_dump covers it
        monkeypatch.delenv(TOOL_ENV)
        archive = backup(pg)
        assert cli(pg.file, "restore", str(archive), "--as", "globex").exit_code == 0
        assert rows(pg_prefix, "globex", "SELECT text FROM recent") == [("a",)]


def test_a_pg_dump_older_than_the_server_is_not_used(
    pg: Tenants, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_dump refuses servers newer than itself: such a one means the portable dump."""
    old = tmp_path / "old-bin" / "pg_dump"
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    old.chmod(0o755)
    monkeypatch.setenv(TOOL_ENV, str(old))
    pg.add("acme", "a")
    result = cli(pg.file, "backup", "acme")
    assert result.exit_code == 0, result.output
    assert "acme: portable dump, not pg_dump: pg_dump 9.6.24 is older than PostgreSQL" in (
        result.output
    )
    assert manifest(archive_path(result, "acme"))["dump"] == "portable"


def test_counts_are_checked_before_commit(
    pg: Tenants, pg_prefix: str, dump: str, tmp_path: Path
) -> None:
    """An archive whose manifest lists other counts than its dump holds: rolled back."""
    pg.add("acme", "one")
    archive = backup(pg)
    pg.add("acme", "two")
    lying = manifest(archive) | {"tables": {"item": 999}}
    bad = rewrite(archive, tmp_path / "lying.tar.gz", {"manifest.json": json.dumps(lying).encode()})
    before = rows(pg_prefix, "acme")

    result = cli(pg.file, "restore", str(bad), "--force")

    failed_cleanly(result, 1, "acme: not restored: ", "rolled back")
    assert rows(pg_prefix, "acme") == before
    assert pg.served("acme") == ["one", "two"]
    # The copy taken first is kept all the same, and the output says where.
    (kept,) = (Path(pg.set.instance_root) / ".backups").glob("acme-*-before-restore.tar.gz")
    assert f"not restored; the copy of acme stays in {kept}" in result.output
    # Into a database made for the restore: dropped again.
    result = cli(pg.file, "restore", str(bad), "--as", "umbrella")
    failed_cleanly(result, 1, "rolled back")
    assert "umbrella" not in databases(pg_prefix)


def test_an_unreachable_database_fails_cleanly(
    pg: Tenants, write_tenants: WriteTenants, pg_prefix: str, dump: str
) -> None:
    pg.add("acme", "a")
    archive = backup(pg)
    closed = write_tenants(
        tenants_text(pg_prefix).replace("127.0.0.1:5432", "127.0.0.1:9"), name="closed.yaml"
    )
    root = Path(pg.set.instance_root)
    before = state(root)
    result = cli(closed, "backup", "acme")
    failed_cleanly(result, 1, "acme: failed: cannot reach the database postgresql", ":9/")
    result = cli(closed, "restore", str(archive), "--force")
    failed_cleanly(result, 1, "acme: not restored: cannot reach the database")
    assert state(root) == before


def test_archive_keeps_or_drops_the_database(pg: Tenants, pg_prefix: str) -> None:
    pg.add("globex", "g")
    pg.add("acme", "a")
    pg.close()
    text = pg.file.read_text()
    text = text.replace("  acme:\n", "").replace("  globex:\n", "  globex: {enabled: false}\n")
    pg.file.write_text(text)

    kept = cli(pg.file, "archive", "acme")
    assert kept.exit_code == 0, kept.output
    assert "acme: database postgresql+psycopg://postgres@127.0.0.1:5432/" in kept.output
    assert "kept (--drop-database drops it)" in kept.output
    assert "acme" in databases(pg_prefix)

    dropped = cli(pg.file, "archive", "globex", "--drop-database")
    assert dropped.exit_code == 0, dropped.output
    assert "globex" not in databases(pg_prefix)
    archive = archive_path(dropped, "globex")
    assert manifest(archive)["tables"] == {"item": 1}
    listed = cli(pg.file, "list", "--archived").output
    assert "(dropped)" in listed.splitlines()[2] and "globex" in listed.splitlines()[2]
