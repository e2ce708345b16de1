"""Backup and restore of one tenant with 100,000 rows, on SQLite and on PostgreSQL.

Run from the repository root (PostgreSQL at 127.0.0.1:5432, user postgres); prints a table and
writes it into docs/benchmarks.md::

    .venv/bin/python bench/bench_backup.py [--rows 100000] [--rounds 3]

The tenant runs the notes app: one user and ``--rows`` notes (title ~30 characters, body ~160
characters of made-up words that compress about as real text does).
Each round, for each side (SQLite; PostgreSQL with pg_dump; PostgreSQL with the portable dump):
``backup_tenant`` into a folder, ``restore`` of that archive into an empty tenant of the same
app, and ``restore --force`` over the tenant itself (which backs the tenant up first). Times
are in-process, without Python's start (add ~0.5 s for the command); a restore includes the
maintenance hold (entering it waits for the workers, measured on its own). The baselines are
the database's own tools doing the copy alone: SQLite's backup API into a file, ``pg_dump`` to
a file and ``psql`` replaying it into an empty database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine, spread, write_section
from dispatcher import build_app, load_tenants
from dispatcher.backup import backup_tenant
from dispatcher.backup_postgres import TOOL_ENV
from dispatcher.database import dispose_engines
from dispatcher.holds import held
from dispatcher.lifecycle import restore
from dispatcher.tenant import TenantSet

HEADING = "## Backups: backup and restore of a 100,000-row tenant (bench/bench_backup.py)"
SERVER = "postgresql://postgres@127.0.0.1:5432"
PREFIX = "bench_backup_"
#: Made-up words, so the notes compress about as well as real text (about 3 to 1).
WORDS = [
    "".join(random.Random(n).choices("abcdefghijklmnopqrstuvwxyz", k=3 + n % 7))
    for n in range(2000)
]


def body(n: int) -> str:
    """~160 characters of words, different for each note."""
    return " ".join(random.Random(n).choices(WORDS, k=24))[:160]


def make_tenants(work: Path) -> TenantSet:
    file = work / "tenants.yaml"
    file.write_text(
        "\n".join(
            [
                "version: 1",
                "server_names: [localhost]",
                "create_databases: true",
                "defaults: {app: tenants.notes, mount: path}",
                "tenants:",
                "  acme:",
                "  empty:",
                f"  pgacme: {{database: '{SERVER}/{PREFIX}acme'}}",
                f"  pgempty: {{database: '{SERVER}/{PREFIX}empty'}}",
                "",
            ]
        )
    )
    return load_tenants(file)


def fill(tenant_set: TenantSet, rows: int) -> None:
    """Create every tenant's schema; put one user and ``rows`` notes into acme and pgacme."""
    for tenant in tenant_set:
        dispose_engines(build_app(tenant, create_database=True))
    notes = [
        (1, f"note number {n:08d} of the bench", body(n), "2026-01-01 00:00:00+00")
        for n in range(rows)
    ]
    with contextlib.closing(
        sqlite3.connect(Path(tenant_set["acme"].instance_path) / "app.db")
    ) as db:
        db.execute("INSERT INTO users (id, username, password_hash) VALUES (1, 'a', 'x')")
        db.executemany(
            "INSERT INTO notes (user_id, title, body, created) VALUES (?, ?, ?, ?)", notes
        )
        db.commit()
    with psycopg.connect(f"{SERVER}/{PREFIX}acme", autocommit=True) as db:
        db.execute("INSERT INTO users (id, username, password_hash) VALUES (1, 'a', 'x')")
        with db.cursor().copy("COPY notes (user_id, title, body, created) FROM STDIN") as copy:
            for row in notes:
                copy.write_row(row)


def empty_again(tenant_set: TenantSet, name: str) -> None:
    """Take the rows out of a tenant restored into, so the next round restores into nothing."""
    if name == "empty":
        with contextlib.closing(
            sqlite3.connect(Path(tenant_set[name].instance_path) / "app.db")
        ) as db:
            db.execute("DELETE FROM notes")
            db.execute("DELETE FROM users")
            db.commit()
    else:
        with psycopg.connect(f"{SERVER}/{PREFIX}empty", autocommit=True) as db:
            db.execute("TRUNCATE notes, users")


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


@contextlib.contextmanager
def dump_kind(kind: str) -> Iterator[None]:
    if kind == "portable":
        os.environ[TOOL_ENV] = "portable"
    try:
        yield
    finally:
        os.environ.pop(TOOL_ENV, None)


def baselines(tenant_set: TenantSet, work: Path) -> dict[str, tuple[float, float]]:
    """The tools alone: (copy out, copy back in) in seconds."""
    source = Path(tenant_set["acme"].instance_path) / "app.db"
    copy = work / "baseline.db"
    copy.unlink(missing_ok=True)

    def sqlite_backup() -> None:
        with (
            contextlib.closing(sqlite3.connect(source)) as a,
            contextlib.closing(sqlite3.connect(copy)) as b,
        ):
            a.backup(b)

    out = timed(sqlite_backup)
    into = work / "baseline-into.db"
    into.unlink(missing_ok=True)

    def sqlite_restore() -> None:
        with (
            contextlib.closing(sqlite3.connect(copy)) as a,
            contextlib.closing(sqlite3.connect(into)) as b,
        ):
            a.backup(b)

    back = timed(sqlite_restore)
    script = work / "baseline.sql"
    dumped = timed(
        lambda: subprocess.run(
            [
                "pg_dump",
                "--no-owner",
                "--no-privileges",
                "-f",
                str(script),
                f"{SERVER}/{PREFIX}acme",
            ],
            check=True,
        )
    )
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{PREFIX}scratch"')
        db.execute(f'CREATE DATABASE "{PREFIX}scratch"')
    replayed = timed(
        lambda: subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "-f",
                str(script),
                f"{SERVER}/{PREFIX}scratch",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    )
    return {"SQLite": (out, back), "PostgreSQL": (dumped, replayed)}


SIDES = (("SQLite", "acme", "empty", "sqlite"), ("PostgreSQL", "pgacme", "pgempty", "pg_dump"),
         ("PostgreSQL", "pgacme", "pgempty", "portable"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as db:
            for name in ("acme", "empty", "scratch"):
                db.execute(f'DROP DATABASE IF EXISTS "{PREFIX}{name}"')
        tenant_set = make_tenants(work)
        try:
            fill(tenant_set, options.rows)
            results = run(tenant_set, work, options.rounds)
        finally:
            with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as db:
                for name in ("acme", "empty", "scratch"):
                    db.execute(f'DROP DATABASE IF EXISTS "{PREFIX}{name}" WITH (FORCE)')
    report(results, options)


def side(
    tenant_set: TenantSet, source: str, empty: str, folder: Path, figures: dict[str, list[float]]
) -> None:
    """One round of one side: backup, restore into an empty tenant, restore --force."""
    taken = backup_tenant(tenant_set[source], str(folder))
    figures.setdefault("backup", []).append(taken.seconds)
    figures.setdefault("size", []).append(os.path.getsize(taken.path) / 2**20)
    target = tenant_set[empty]
    into = timed(lambda: restore(tenant_set, taken.path, target, own_files=False))
    figures.setdefault("into empty", []).append(into)
    empty_again(tenant_set, empty)
    over = timed(lambda: restore(tenant_set, taken.path, tenant_set[source], force=True))
    figures.setdefault("force", []).append(over)


def run(tenant_set: TenantSet, work: Path, rounds: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}
    hold = tenant_set["empty"].name
    for number in range(rounds):
        for backend, source, empty, kind in SIDES:
            figures = results.setdefault(f"{backend}|{kind}", {})
            with dump_kind(kind):
                side(tenant_set, source, empty, work / f"backups{number}", figures)
        for backend, (out, back) in baselines(tenant_set, work).items():
            figures = results.setdefault(f"{backend}|baseline", {})
            figures.setdefault("backup", []).append(out)
            figures.setdefault("into empty", []).append(back)

        def hold_once() -> None:
            with held(tenant_set, hold, "bench"):
                pass

        results.setdefault("hold|", {}).setdefault("hold", []).append(timed(hold_once))
        print(f"round {number + 1}/{rounds} done", file=sys.stderr)
    return results


def report(results: dict[str, dict[str, list[float]]], options: argparse.Namespace) -> None:
    hold = spread(results.pop("hold|")["hold"], 2)
    lines = [
        HEADING,
        "",
        f"One notes tenant with {options.rows:,} notes (one user; title ~30 characters, "
        f"body ~160 of made-up words), median (min-max) over {options.rounds} interleaved "
        "rounds, in-process (the command adds Python's start, ~0.5 s). A restore includes "
        f"entering and leaving the maintenance hold ({hold} s today, a fixed wait for the "
        "workers' once-a-second look); `--force` over data also backs the tenant up first. "
        f"Baselines: the database's own tools doing the copy alone. Machine: {machine()}.",
        "",
        "| backend | dump | archive, MiB | backup, s | restore into an empty tenant, s | "
        "restore --force over itself, s |",
        "|---|---|---|---|---|---|",
    ]
    for key, figures in results.items():
        backend, kind = key.split("|")
        if kind == "baseline":
            tool = "backup API" if backend == "SQLite" else "pg_dump / psql"
            lines.append(
                f"| {backend} | baseline: {tool} alone | | {spread(figures['backup'], 2)} | "
                f"{spread(figures['into empty'], 2)} | |"
            )
            continue
        lines.append(
            f"| {backend} | {kind} | {spread(figures['size'], 1)} | "
            f"{spread(figures['backup'], 2)} | {spread(figures['into empty'], 2)} | "
            f"{spread(figures['force'], 2)} |"
        )
    lines += [
        "",
        "A backup's time beyond the baseline is mostly gzip (level 1, which takes half the "
        "time of the default level 6 for archives 9% larger) and the sha256 of each member; a "
        "restore's is the hold, unpacking and checking the archive, and counting the rows "
        "before and after. `--force` adds a backup of what is replaced.",
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    write_section(HEADING, section)


if __name__ == "__main__":
    main()
