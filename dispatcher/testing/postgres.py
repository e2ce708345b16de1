"""Throwaway PostgreSQL databases for the plugin, and putting one back as its app built it.

A tenant on PostgreSQL gets one database per (tenant, ``app_config``) per session, on its own
server, named ``dispatcher_test_<random>_<n>`` (another session's names never collide). The
app builds its schema there once; :class:`Snapshot` records what the database then holds, and
after every test :meth:`Snapshot.reset` puts it back in one round trip: the test's leftover
connections are closed (one may hold locks, or write later), every table emptied
(``DELETE``; ``TRUNCATE`` swaps files and took 12-60 ms per call on this busy server), the
rows the build left (``alembic_version``, seeds) and every sequence put back, so ids restart
where a new tenant's would. A test that changed
the schema (DDL) cannot be put back: the reset raises and the database is dropped. The reset's
statements are prepared once and sent together (psycopg's pipeline mode): about 0.6-1 ms for
the notes app, where one ``DO`` block doing the same, planned anew each time, took 1.5-7 ms::

    server = Server(psycopg)
    name = server.create(url)                    # then build the app on it
    snapshot = Snapshot.take(control)            # control: an autocommit connection to it
    ...; snapshot.reset(control)                 # after each test; raises if it cannot
    server.close()                               # every database dropped
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL

#: Every object a user (or an extension, or a migration) creates gets an OID from this one on.
_USER_OID = 16384

#: What the schema is, as one md5: a test that creates, drops, alters or replaces anything
#: (tables, columns, defaults, constraints, functions, views, types, triggers, grants,
#: database settings) changes it.
_SCHEMA_DIGEST = f"""
SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
  SELECT concat_ws('|', 'c', oid, relname, relkind, relacl, relpersistence, relrowsecurity,
      relforcerowsecurity) AS x FROM pg_class
    WHERE oid >= {_USER_OID} AND relpersistence <> 't'
  UNION ALL SELECT concat_ws('|', 'a', attrelid, attnum, attname, atttypid, atttypmod,
      attnotnull, attisdropped, atthasdef, attidentity, attgenerated)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    WHERE attrelid >= {_USER_OID} AND attnum > 0 AND c.relpersistence <> 't'
  UNION ALL SELECT concat_ws('|', 'q', seqrelid, seqtypid, seqstart, seqincrement, seqmax,
      seqmin, seqcache, seqcycle) FROM pg_sequence WHERE seqrelid >= {_USER_OID}
  UNION ALL SELECT concat_ws('|', 'd', oid, md5(adbin::text)) FROM pg_attrdef
    WHERE oid >= {_USER_OID}
  UNION ALL SELECT concat_ws('|', 'k', oid, conname) FROM pg_constraint WHERE oid >= {_USER_OID}
  UNION ALL SELECT concat_ws('|', 'p', oid, md5(prosrc)) FROM pg_proc WHERE oid >= {_USER_OID}
  UNION ALL SELECT concat_ws('|', 'r', oid, md5(ev_action::text)) FROM pg_rewrite
    WHERE oid >= {_USER_OID}
  UNION ALL SELECT concat_ws('|', 't', oid, typname) FROM pg_type WHERE oid >= {_USER_OID}
  UNION ALL SELECT concat_ws('|', 'e', oid, enumlabel) FROM pg_enum WHERE oid >= {_USER_OID}
  UNION ALL SELECT concat_ws('|', 'g', oid, tgenabled) FROM pg_trigger WHERE oid >= {_USER_OID}
  UNION ALL SELECT concat_ws('|', 'n', oid, nspname) FROM pg_namespace WHERE oid >= {_USER_OID}
  UNION ALL SELECT concat_ws('|', 'x', oid, extversion) FROM pg_extension
    WHERE oid >= {_USER_OID}
  UNION ALL SELECT concat_ws('|', 'o', oid) FROM pg_policy WHERE oid >= {_USER_OID}
  UNION ALL SELECT concat_ws('|', 's', setrole, setconfig) FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) AS schema"""

#: The tables to empty (partitions are emptied through their parent), with their FKs.
_TABLES = f"""
SELECT c.oid, format('%I.%I', n.nspname, c.relname) FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid >= {_USER_OID} AND c.relkind IN ('r', 'p') AND NOT c.relispartition
    AND c.relpersistence <> 't'"""
_FOREIGN_KEYS = "SELECT conrelid, confrelid FROM pg_constraint WHERE contype = 'f'"
_SEQUENCES = f"""
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid >= {_USER_OID} AND c.relkind = 'S' AND c.relpersistence <> 't'"""

#: Closes whatever the test left connected (a leaked session may hold locks or write later).
_CLOSE_OTHERS = """
SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
  WHERE datname = current_database() AND pid <> pg_backend_pid()"""


def _rows_digest(table: str) -> str:
    return f"(SELECT md5(string_agg(r::text, E'\\n' ORDER BY r::text)) FROM {table} AS r)"


@dataclass
class Snapshot:
    """A database as its app's build left it, and the statements that put it back."""

    #: Run in order in one round trip (a pipeline), each prepared once per connection.
    statements: list[str]
    #: The statements whose one value must be true, or the database was not put back.
    checks: dict[int, str]

    @classmethod
    def take(cls, connection: Any) -> Snapshot:
        """Record the database behind ``connection`` (autocommit, nobody else writing)."""
        from psycopg import sql  # the plugin checked that psycopg is installed

        def literal(value: str) -> str:
            return sql.Literal(value).as_string(connection)

        schema = connection.execute(_SCHEMA_DIGEST).fetchone()[0]
        tables = dict(connection.execute(_TABLES).fetchall())
        order, cyclic = _children_first(tables, connection.execute(_FOREIGN_KEYS).fetchall())
        seeds = {}  # table -> (rows as json, their digest, insertable columns)
        for table in order:
            digest = connection.execute(f"SELECT {_rows_digest(table)}").fetchone()[0]
            if digest is not None:
                rows = connection.execute(f"SELECT json_agg(r)::text FROM {table} AS r")
                columns = connection.execute(
                    "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) "
                    "FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                    "AND NOT attisdropped AND attgenerated = ''",
                    [table],
                ).fetchone()[0]
                seeds[table] = (rows.fetchone()[0], digest, columns)
        statements = [
            _CLOSE_OTHERS,
            "BEGIN",
            "SET LOCAL lock_timeout = '10s'",
            # A test database need not survive a crash: no wait for the WAL flush.
            "SET LOCAL synchronous_commit = off",
            f"SELECT ({_SCHEMA_DIGEST}) = {literal(schema)}",
        ]
        checks = {len(statements) - 1: "the test changed the schema"}
        empty = [t for t in order if t not in seeds]
        if cyclic:  # foreign keys in a cycle: no DELETE order works, TRUNCATE does
            statements.append(f"TRUNCATE {', '.join(order)}")
        else:
            statements += [f"DELETE FROM {table}" for table in empty]
        if seeds:  # put back only when changed: a write costs more than a look
            changed = " OR ".join(
                f"{_rows_digest(table)} IS DISTINCT FROM {literal(digest)}"
                for table, (_, digest, _) in seeds.items()
            )
            statements += [f"DELETE FROM {table} WHERE {changed}" for table in seeds]
            for table, (rows, _, columns) in reversed(seeds.items()):  # parents first
                statements.append(
                    f"INSERT INTO {table} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} "
                    f"FROM json_populate_recordset(NULL::{table}, {literal(rows)}) "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {table})"
                )
        for (sequence,) in connection.execute(_SEQUENCES).fetchall():
            value, called = connection.execute(
                f"SELECT last_value, is_called FROM {sequence}"
            ).fetchone()
            state = f"{value}, {'true' if called else 'false'}"
            statements.append(
                f"SELECT setval({literal(sequence)}, {state}) FROM {sequence} "
                f"WHERE (last_value, is_called) IS DISTINCT FROM ({state})"
            )
        if empty:  # a DELETE trigger may have written elsewhere: then it cannot be reset
            exists = " OR ".join(f"EXISTS (SELECT 1 FROM {table})" for table in empty)
            statements.append(f"SELECT NOT ({exists})")
            checks[len(statements) - 1] = "rows came back after DELETE (a trigger?)"
        statements.append("COMMIT")
        return cls(statements, checks)

    def reset(self, connection: Any) -> None:
        """Put the database back; raises if it cannot be (a psycopg error, or a check)."""
        connection.prepared_max = max(connection.prepared_max, len(self.statements))
        with connection.pipeline():
            cursors = [
                connection.execute(
                    statement, prepare=not statement.startswith(("BEGIN", "SET", "COMMIT"))
                )
                for statement in self.statements
            ]
        for index, problem in self.checks.items():
            if cursors[index].fetchone()[0] is not True:
                raise RuntimeError(f"the database cannot be reset: {problem}")


def _children_first(
    tables: dict[int, str], foreign_keys: list[tuple[int, int]]
) -> tuple[list[str], bool]:
    """Tables ordered so that each comes before the tables it references, and whether
    foreign keys form a cycle (a table referencing itself is no cycle for DELETE)."""
    references: dict[int, set[int]] = {oid: set() for oid in tables}
    for child, parent in foreign_keys:
        if child in tables and parent in tables and child != parent:
            references[child].add(parent)
    order: list[int] = []
    remaining = dict(references)
    while remaining:
        # A table no remaining table references can be emptied now.
        referenced = set().union(*remaining.values())
        ready = sorted(oid for oid in remaining if oid not in referenced)
        if not ready:
            return [tables[oid] for oid in sorted(tables)], True
        for oid in ready:
            order.append(oid)
            del remaining[oid]
    return [tables[oid] for oid in order], False


class Server:
    """Creates and drops the session's databases on the tenants' servers."""

    def __init__(self, psycopg: Any) -> None:
        self.psycopg = psycopg
        self.prefix = f"dispatcher_test_{secrets.token_hex(4)}"
        self.count = itertools.count()
        self.servers: dict[tuple[Any, ...], Any] = {}
        self.created: list[URL] = []

    def connect(self, url: URL, database: str = "postgres") -> Any:
        """An autocommit connection to ``database`` on ``url``'s server (its query's
        ``host``, ``user``... win over the URL's parts, as with the driver; never its
        ``dbname``)."""
        options = {"host": url.host, "port": url.port, "user": url.username}
        options["password"] = url.password
        options.update((k, v) for k, v in url.query.items() if isinstance(v, str))
        options.pop("database", None)
        options["dbname"] = database
        given = {k: v for k, v in options.items() if v is not None}
        return self.psycopg.connect(autocommit=True, **given)

    def server(self, url: URL) -> Any:
        """The server's ``postgres`` database (CREATE DATABASE runs outside any other), one
        connection per server."""
        key = (url.host, url.port, url.username, url.password, tuple(url.query.items()))
        if key not in self.servers:
            self.servers[key] = self.connect(url)
        return self.servers[key]

    def create(self, url: URL) -> str:
        """A new empty database on ``url``'s server; its name."""
        name = f"{self.prefix}_{next(self.count)}"
        sql = self.psycopg.sql
        self.server(url).execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(url.set(database=name))
        return name

    def drop(self, url: URL) -> None:
        """Drop a database this session created, closing any connection left to it."""
        if url not in self.created:
            return  # never a database this session did not create
        self.created.remove(url)
        sql = self.psycopg.sql
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        self.server(url).execute(statement.format(sql.Identifier(url.database)))

    def close(self) -> None:
        """Drop what is left and close the connections."""
        try:
            for url in list(self.created):
                self.drop(url)
        finally:
            for connection in self.servers.values():
                connection.close()
