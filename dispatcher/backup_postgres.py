"""PostgreSQL databases in backups: ``pg_dump`` when a recent enough one is here, else a portable
dump through psycopg; restores go into the tenant's own database, in one transaction.

Which dump (decided per backup, and written into the manifest): ``pg_dump`` (plain SQL, no
owners or grants, so it restores into any tenant's database) when one whose major version is at
least the server's is found: ``$DISPATCHER_PG_DUMP`` if set, else ``pg_dump`` on ``PATH``, else
the newest ``/usr/lib/postgresql/*/bin/pg_dump`` (pg_dump refuses servers newer than itself).
Otherwise, or with ``DISPATCHER_PG_DUMP=portable``, the portable dump of
:mod:`dispatcher.backup_portable`, which needs nothing but psycopg.

The row counts are taken in a ``REPEATABLE READ`` transaction whose snapshot pg_dump reuses
(``--snapshot``), so the manifest counts exactly the rows of the dump, however busy the tenant.
A restore drops every table, replays the dump and compares the counts before ``COMMIT``: it
lands whole or not at all, and the app's pooled connections stay valid (same database)::

    tables, revision, details = dump_database(uri, staging)       # -> staging/database.sql
    restore_database(uri, "pg_dump", tables, details, staged)
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from . import backup_portable as portable
from .errors import BackupError

#: A pg_dump to use, or ``portable`` for the portable dump even when pg_dump is here.
TOOL_ENV = "DISPATCHER_PG_DUMP"
#: Where Debian and Ubuntu install each PostgreSQL version's client programs.
VERSIONED_BIN = "/usr/lib/postgresql/*/bin"
CONNECT_TIMEOUT = 10
#: How long a restore waits for a lock on the tenant's tables before it gives up.
LOCK_TIMEOUT = "30s"


def conninfo(uri: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password, and an environment holding it.

    The password goes through ``PGPASSWORD``: never on a command line, where ``ps`` shows it.
    """
    url = make_url(uri)
    env = {"PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT)}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def shown(uri: str) -> str:
    """The URL as messages show it: password hidden."""
    return make_url(uri).render_as_string(hide_password=True)


@contextlib.contextmanager
def connect(uri: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
    """A psycopg connection to the tenant's database; a clear error when it cannot be reached."""
    info, env = conninfo(uri)
    try:
        connection = psycopg.connect(
            info, password=env.get("PGPASSWORD"), connect_timeout=CONNECT_TIMEOUT,
            autocommit=autocommit,
        )  # fmt: skip
    except psycopg.OperationalError as e:
        raise BackupError(f"cannot reach the database {shown(uri)}: {_first_line(e)}") from None
    with connection:
        yield connection


def database_exists(uri: str) -> bool:
    """Whether the tenant's database exists; an error if its server cannot be reached."""
    try:
        with connect(uri, autocommit=True):
            return True
    except BackupError as e:
        if "does not exist" in str(e):  # libpq says 'database "x" does not exist'
            return False
        raise


def current_counts(uri: str) -> dict[str, int] | None:
    """Rows per table of the tenant's database now; ``None`` if it does not exist yet."""
    if not database_exists(uri):
        return None
    with connect(uri, autocommit=True) as connection:
        return portable.row_counts(connection, portable.tables(connection))


def dump_database(uri: str, staging: str) -> tuple[dict[str, int], str | None, dict[str, Any]]:
    """Dump into ``staging`` (``database.sql``, or the portable members): counts, revision,
    details for the manifest (``dump``: ``pg_dump`` or ``portable``, tool and server versions)."""
    with connect(uri) as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        server = connection.info.server_version // 10000
        details: dict[str, Any] = {"server_version": connection.info.parameter_status(
            "server_version"
        )}  # fmt: skip
        tables = portable.tables(connection)  # the snapshot starts here
        counts = portable.row_counts(connection, tables)
        revision = portable.revision(connection, tables)
        tool = find_tool("pg_dump", server)
        if isinstance(tool, str):
            details.update(dump="portable", why=tool)
            portable.dump(connection, tables, staging)
        else:
            snapshot = connection.execute("SELECT pg_export_snapshot()").fetchone()
            assert snapshot is not None
            details.update(dump="pg_dump", pg_dump=tool[1])
            _pg_dump(uri, tool[0], str(snapshot[0]), os.path.join(staging, "database.sql"))
        connection.rollback()
    return counts, revision, details


def _pg_dump(uri: str, binary: str, snapshot: str, output: str) -> None:
    info, env = conninfo(uri)
    argv = [binary, "--format=plain", "--no-owner", "--no-privileges", "--clean", "--if-exists"]
    argv += [f"--snapshot={snapshot}", f"--file={output}", f"--dbname={info}"]
    result = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True)
    if result.returncode != 0:
        raise BackupError(f"pg_dump failed: {_tail(result.stderr)}")


def restore_database(
    uri: str, kind: str, tables: dict[str, int], details: dict[str, Any], staged: str
) -> None:
    """Replace every table of the database with the dump staged in the folder ``staged``
    (``database.sql``, or the portable dump's ``database/``), in one transaction."""
    if kind == "portable":
        with connect(uri) as connection:
            connection.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            _drop_everything(connection)
            portable.restore(connection, staged)
            _check_counts(connection, tables)
        return
    version = str(details.get("pg_dump", "0"))
    tool = find_tool("psql", int(version.split(".")[0]), use_setting=False)
    if isinstance(tool, str):
        raise BackupError(f"restoring a pg_dump archive needs psql (PostgreSQL {version}): {tool}")
    with connect(uri, autocommit=True) as connection:
        drops = [f"DROP TABLE IF EXISTS {q} CASCADE;" for q in _qualified(connection)]
    prologue = [f"SET lock_timeout = '{LOCK_TIMEOUT}';", "SET client_min_messages = warning;"]
    script = os.path.join(staged, "database.sql")
    _psql(uri, tool[0], "\n".join(prologue + drops), script, _verify_sql(tables))


def _psql(uri: str, binary: str, prologue: str, script: str, epilogue: str) -> None:
    """Run prologue + script + epilogue through psql as one transaction; stop at any error."""
    info, env = conninfo(uri)
    argv = [binary, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", "-"]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [*argv, f"--dbname={info}"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=errors, env={**os.environ, **env},
        )  # fmt: skip
        assert process.stdin is not None
        try:
            process.stdin.write(prologue.encode() + b"\n")
            with open(script, "rb") as f:
                shutil.copyfileobj(f, process.stdin, 1 << 20)
            process.stdin.write(b"\n" + epilogue.encode() + b"\n")
        except BrokenPipeError:  # psql stopped at an error, which is in its error output
            pass
        finally:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
            process.wait()
        if process.returncode != 0:
            errors.seek(0)
            message = _tail(errors.read().decode(errors="replace"))
            raise BackupError(f"the restore failed and was rolled back: {message}")


def _drop_everything(connection: psycopg.Connection[Any]) -> None:
    for name in _qualified(connection):
        connection.execute(f"DROP TABLE IF EXISTS {name} CASCADE")
    rows = connection.execute(portable.SEQUENCES).fetchall()
    for schema, name in rows:
        connection.execute(f"DROP SEQUENCE IF EXISTS {portable.qualify(schema, name)} CASCADE")


def _qualified(connection: psycopg.Connection[Any]) -> list[str]:
    return [portable.qualify(schema, name) for schema, name in portable.tables(connection)]


def _check_counts(connection: psycopg.Connection[Any], expected: dict[str, int]) -> None:
    found = portable.row_counts(connection, portable.tables(connection))
    if found != expected:
        raise BackupError(
            f"the restored rows {found} do not match the archive's {expected}: rolled back"
        )


def _verify_sql(tables: dict[str, int]) -> str:
    """A DO block that fails the transaction unless every table has its archived row count."""
    checks = []
    for key, rows in sorted(tables.items()):
        schema, _, name = key.rpartition(".")
        table = portable.qualify(schema or "public", name)
        literal = key.replace("'", "''")
        checks.append(
            f"SELECT count(*) INTO n FROM {table}; IF n <> {int(rows)} THEN RAISE EXCEPTION "
            f"'table {literal}: % rows restored, {int(rows)} in the archive', n; END IF;"
        )
    body = "\n".join(checks)
    return f"DO $verify$ DECLARE n bigint; BEGIN\n{body}\nEND $verify$;"


def drop_database(uri: str) -> None:
    """``DROP DATABASE`` through the server's ``postgres`` database, as the tenant's role."""
    url = make_url(uri)
    server = url.set(database="postgres").render_as_string(hide_password=False)
    with connect(server, autocommit=True) as connection:
        quoted = portable.quote(str(url.database))
        try:
            connection.execute(f"DROP DATABASE IF EXISTS {quoted}")
        except psycopg.Error as e:
            raise BackupError(f"cannot drop the database {shown(uri)}: {_first_line(e)}") from None


def find_tool(name: str, at_least: int, *, use_setting: bool = True) -> tuple[str, str] | str:
    """``(path, version)`` of a PostgreSQL client program of major version ``at_least`` or
    newer; otherwise a sentence saying why there is none."""
    setting = os.environ.get(TOOL_ENV, "") if use_setting else ""
    if setting == "portable":
        return f"${TOOL_ENV} is 'portable'"
    if setting:
        beside = os.path.join(os.path.dirname(setting), name)
        candidates = [setting if name == "pg_dump" else beside]
    else:
        on_path = shutil.which(name)
        versioned = sorted(glob.glob(os.path.join(VERSIONED_BIN, name)), key=_numeric, reverse=True)
        candidates = ([on_path] if on_path else []) + versioned
    found = [(path, version) for path in candidates if (version := _version(path))]
    for path, version in found:
        if int(version.split(".")[0]) >= at_least:
            return path, version
    if found:
        return f"{name} {found[0][1]} is older than PostgreSQL {at_least}"
    return f"no {name} on this machine"


@lru_cache(maxsize=16)
def _version(path: str) -> str | None:
    try:
        result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)*)", result.stdout)
    return match.group(1) if match else None


def _numeric(path: str) -> list[int]:
    return [int(part) for part in re.findall(r"\d+", path)]


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-3:]) or "(no message)"
