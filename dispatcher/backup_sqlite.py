"""SQLite databases in backups: snapshots with the online backup API, restores into the live file.

A tenant's SQLite database runs in WAL mode and workers keep connections to it open, so:

- a backup never copies the file (its WAL would be missing): :func:`snapshot` uses SQLite's
  online backup API, a consistent copy taken in one read transaction while writes go on, made
  self-contained (rollback journal, no ``-wal`` file) so the archive holds one plain file;
- a restore never replaces the file (a worker's pooled connection would go on writing to the
  unlinked inode, and those writes would vanish at its next restart): :func:`restore_into`
  writes the archived pages INTO the live database with the same API, in one write
  transaction, and every open connection sees the restored data at its next transaction::

    snapshot("/srv/app/instance/acme/app.db", "/tmp/stage/database.sqlite3")
    restore_into("/tmp/stage/database.sqlite3", "/srv/app/instance/acme/app.db")
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import make_url

from .errors import BackupError

#: The first 16 bytes of every SQLite database file.
MAGIC = b"SQLite format 3\x00"
#: Companions of a database file, never archived or restored on their own.
COMPANIONS = ("-wal", "-shm", "-journal")
#: Seconds a backup or restore waits for a lock another process holds on the database.
LOCK_TIMEOUT = 30.0


def database_path(uri: str) -> str | None:
    """The absolute path of a SQLite URL's file; ``None`` for an in-memory database."""
    database = make_url(uri).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return os.path.abspath(database)


def is_sqlite(path: str) -> bool:
    """Whether ``path`` is a SQLite database file (by its header)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


@contextlib.contextmanager
def _connect(path: str, mode: str = "rw") -> Iterator[sqlite3.Connection]:
    """A connection that never creates the file by accident (``mode=rw``), closed afterwards."""
    try:
        connection = sqlite3.connect(
            f"file:{quote(path)}?mode={mode}", uri=True, timeout=LOCK_TIMEOUT
        )
    except sqlite3.Error as e:
        raise BackupError(f"cannot open the SQLite database {path}: {e}") from e
    try:
        yield connection
    finally:
        connection.close()


def _deadline(what: str) -> Any:
    """A backup-API progress callback that gives up after :data:`LOCK_TIMEOUT` seconds.

    Python's ``Connection.backup`` retries a busy database for ever; a process holding a write
    lock that long (an operator's ``sqlite3`` shell mid-transaction) must fail the command.
    """
    give_up = time.monotonic() + LOCK_TIMEOUT

    def progress(status: int, remaining: int, total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > give_up:
            raise BackupError(
                f"{what} stayed locked by another process for {LOCK_TIMEOUT:.0f} s; "
                "find what holds it (fuser), then run the command again"
            )

    return progress


def snapshot(live: str, copy: str) -> None:
    """Copy the live database ``live`` into the new file ``copy``, consistently, online."""
    with _connect(live) as source, _connect(copy, "rwc") as target:
        try:
            source.backup(target, progress=_deadline(f"the database {live}"))
            # The copy of a WAL database is in WAL mode too; make it one self-contained file.
            target.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error as e:
            raise _error(f"cannot back up the SQLite database {live}", e) from e


def describe(path: str) -> tuple[dict[str, int], str | None]:
    """Row counts per table (SQLite's own ``sqlite_*`` tables left out) and Alembic revision."""
    with _connect(path) as connection:
        try:
            names = [
                row[0]
                for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
                )
            ]
            tables = {
                name: connection.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0]
                for name in names
            }
            revision = None
            if "alembic_version" in tables:
                rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
                revision = ",".join(sorted(row[0] for row in rows)) or None
        except sqlite3.Error as e:
            raise BackupError(f"cannot read the SQLite database {path}: {e}") from e
    return tables, revision


def page_size(path: str) -> int:
    with _connect(path) as connection:
        return int(connection.execute("PRAGMA page_size").fetchone()[0])


def restore_into(staged: str, live: str) -> None:
    """Write the database ``staged`` into ``live`` (created if missing) in one transaction.

    A live database in WAL mode only takes pages of its own size (SQLite refuses the backup
    otherwise), so a staged copy of another page size is rebuilt with that size first.
    """
    new = not os.path.exists(live)
    with _connect(live, "rwc") as target:
        try:
            mode = target.execute("PRAGMA journal_mode").fetchone()[0]
            size = int(target.execute("PRAGMA page_size").fetchone()[0])
            if mode == "wal" and page_size(staged) != size:
                with _connect(staged) as copy:
                    copy.execute(f"PRAGMA page_size={size}")
                    copy.execute("VACUUM")
            with _connect(staged) as source:
                source.backup(target, progress=_deadline(f"the database {live}"))
            if new:  # as the dispatcher runs every tenant's SQLite database
                target.execute("PRAGMA journal_mode=WAL")
        except (sqlite3.Error, BackupError) as e:
            failed = e
        else:
            return
    if new:  # created here: nothing may be left behind by a restore that did not finish
        for suffix in ("", *COMPANIONS):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(live + suffix)
    if isinstance(failed, BackupError):
        raise failed
    raise _error(f"cannot write into the SQLite database {live}", failed) from failed


def _error(what: str, error: sqlite3.Error) -> BackupError:
    if "disk is full" in str(error) or getattr(error, "sqlite_errorcode", 0) == sqlite3.SQLITE_FULL:
        return BackupError(f"{what}: no space left on the device ({error})")
    return BackupError(f"{what}: {error}")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
