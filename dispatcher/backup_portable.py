"""The portable PostgreSQL dump: the schema read from the catalog, the rows with ``COPY``, all
through psycopg, for machines without a ``pg_dump`` fit for the server (:mod:`.backup_postgres`).

It covers what Flask-SQLAlchemy apps and their migrations create: tables (unlogged ones too)
in any schema, their columns (types, defaults, collations, identity), sequences and where they
stand, primary keys, unique, check, exclusion and foreign-key constraints, and indexes; the
definitions come from PostgreSQL itself (``format_type``, ``pg_get_constraintdef``,
``pg_get_indexdef``), schema-qualified. A database holding anything else (views, functions,
triggers, types, extensions, policies, rules, inheritance, partitions, generated columns) is
refused with the list of what is missing, never backed up in part. Owners, grants and comments
are not kept (as with ``pg_dump --no-owner --no-privileges``). Members::

    database/schema.json   {"before": [SQL, ...], "tables": [{"table", "columns", "member"}],
                            "after": [SQL, ...]}
    database/1.copy ...    each table's rows, in COPY's text format
"""

from __future__ import annotations

import json
import os
from typing import Any

import psycopg

from .errors import BackupError

_USER = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'"
_JOIN = "JOIN pg_namespace n ON n.oid = c.relnamespace"
TABLES = f"SELECT n.nspname, c.relname FROM pg_class c {_JOIN} WHERE c.relkind IN ('r', 'p') AND {_USER} ORDER BY 1, 2"  # noqa: E501
SEQUENCES = f"SELECT n.nspname, c.relname FROM pg_class c {_JOIN} WHERE c.relkind = 'S' AND {_USER} ORDER BY 1, 2"  # noqa: E501
_NOT_EXTENSION = "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = {oid} AND e.deptype = 'e')"
_KIND = (
    "CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' "
    "WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' ELSE 'composite type' END"
)
#: What the portable dump does not cover: queries naming such objects ("view public.recent").
_UNSUPPORTED = (
    f"SELECT {_KIND} || ' ' || c.oid::regclass::text FROM pg_class c {_JOIN} WHERE c.relkind IN ('v', 'm', 'f', 'p', 'c') AND {_USER}",  # noqa: E501
    "SELECT 'inherited table ' || inhrelid::regclass::text FROM pg_inherits",
    f"SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_USER} AND {_NOT_EXTENSION.format(oid='p.oid')}",  # noqa: E501
    f"SELECT 'type ' || t.oid::regtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typtype IN ('e', 'd', 'r', 'm') AND {_USER} AND {_NOT_EXTENSION.format(oid='t.oid')}",  # noqa: E501
    "SELECT 'trigger ' || tgname || ' on ' || tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal",  # noqa: E501
    "SELECT 'extension ' || extname FROM pg_extension WHERE extname <> 'plpgsql'",
    "SELECT 'policy ' || polname || ' on ' || polrelid::regclass::text FROM pg_policy",
    f"SELECT 'rule ' || r.rulename || ' on ' || c.oid::regclass::text FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class {_JOIN} WHERE c.relkind = 'r' AND {_USER}",  # noqa: E501
    f"SELECT 'generated column ' || c.oid::regclass::text || '.' || a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid {_JOIN} WHERE a.attgenerated <> '' AND NOT a.attisdropped AND {_USER}",  # noqa: E501
)
_TABLE_INFO = f"SELECT c.oid, n.nspname, c.relname, c.relpersistence FROM pg_class c {_JOIN} WHERE c.relkind = 'r' AND {_USER} ORDER BY 2, 3"  # noqa: E501
_COLUMNS = """
SELECT quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity,
       CASE WHEN a.attcollation <> t.typcollation
            THEN quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END,
       pg_get_serial_sequence(a.attrelid::regclass::text, a.attname)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""
_SEQUENCE_INFO = f"""
SELECT c.oid::regclass::text, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
       s.seqmin, s.seqmax, s.seqcache, s.seqcycle, d.deptype,
       d.refobjid::regclass::text, quote_ident(a.attname)
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid {_JOIN}
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE {_USER} ORDER BY 1
"""
_CONSTRAINTS = """
SELECT quote_ident(conname), pg_get_constraintdef(oid), contype FROM pg_constraint
WHERE conrelid = %s AND contype IN ('p', 'u', 'c', 'x', 'f') ORDER BY contype = 'f', conname
"""
_INDEXES = """
SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = %s AND NOT EXISTS (
    SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid
    AND c.contype IN ('p', 'u', 'x')) ORDER BY 1
"""


def quote(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def qualify(schema: str, name: str) -> str:
    return f"{quote(schema)}.{quote(name)}"


def key(schema: str, name: str) -> str:
    """A table's name in manifests and messages: ``notes``, or ``audit.events`` outside public."""
    return name if schema == "public" else f"{schema}.{name}"


Connection = psycopg.Connection[Any]


def tables(connection: Connection) -> list[tuple[str, str]]:
    """(schema, table) of every table outside PostgreSQL's own schemas."""
    return [(str(s), str(t)) for s, t in connection.execute(TABLES).fetchall()]


def row_counts(connection: Connection, names: list[tuple[str, str]]) -> dict[str, int]:
    counts = {}
    for schema, name in names:
        row = connection.execute(f"SELECT count(*) FROM {qualify(schema, name)}").fetchone()
        counts[key(schema, name)] = int(row[0]) if row else 0
    return counts


def revision(connection: Connection, names: list[tuple[str, str]]) -> str | None:
    """The Alembic revision (``alembic_version`` in schema public), if any."""
    if ("public", "alembic_version") not in names:
        return None
    rows = connection.execute("SELECT version_num FROM public.alembic_version").fetchall()
    return ",".join(sorted(str(row[0]) for row in rows)) or None


def dump(connection: Connection, names: list[tuple[str, str]], staging: str) -> None:
    """Write ``database/schema.json`` and one COPY file per table into ``staging``, in the
    transaction (and so the snapshot) the caller opened."""
    connection.execute("SET LOCAL search_path = ''")  # every name in definitions qualified
    missing = [str(row[0]) for query in _UNSUPPORTED for row in connection.execute(query)]
    if missing:
        raise BackupError(
            "the portable dump covers tables, sequences, constraints and indexes; this database "
            f"also has: {', '.join(missing)}. Install PostgreSQL's client programs (a pg_dump "
            "as new as the server) on this machine to back it up"
        )
    folder = os.path.join(staging, "database")
    os.makedirs(folder, mode=0o700)
    before = [f"CREATE SCHEMA IF NOT EXISTS {quote(s)}" for s in sorted({s for s, _ in names})]
    before = [b for b in before if b != 'CREATE SCHEMA IF NOT EXISTS "public"']
    sequences, positions, owned, identities = _sequences(connection)
    before += sequences
    copies: list[dict[str, str]] = []
    keys: list[str] = []
    foreign: list[str] = []
    for number, (oid, schema, name, persistence) in enumerate(
        connection.execute(_TABLE_INFO).fetchall(), start=1
    ):
        table = qualify(schema, name)
        columns = connection.execute(_COLUMNS, (oid,)).fetchall()
        unlogged = "UNLOGGED " if persistence == "u" else ""
        definitions = ", ".join(_column(column, identities) for column in columns)
        before.append(f"CREATE {unlogged}TABLE {table} ({definitions})")
        member = f"database/{number}.copy"
        names_sql = ", ".join(c[0] for c in columns)
        query = f"COPY {table} ({names_sql}) TO STDOUT"
        with (
            open(os.path.join(staging, member), "xb") as f,
            connection.cursor().copy(query) as copy,
        ):
            for data in copy:
                f.write(data)
        copies.append({"table": table, "columns": names_sql, "member": member})
        for constraint, definition, kind in connection.execute(_CONSTRAINTS, (oid,)).fetchall():
            statement = f"ALTER TABLE ONLY {table} ADD CONSTRAINT {constraint} {definition}"
            (foreign if kind == "f" else keys).append(statement)
        keys += [str(d) for (d,) in connection.execute(_INDEXES, (oid,)).fetchall()]
    # Keys and indexes once the rows are in (faster), foreign keys once every key exists.
    after = keys + foreign + positions
    schema_json = {"before": before + owned, "tables": copies, "after": after}
    with open(os.path.join(folder, "schema.json"), "x") as f:
        json.dump(schema_json, f, indent=1)


def _column(row: tuple[Any, ...], identities: dict[str, str]) -> str:
    name, type_, not_null, default, identity, collation, sequence = row
    parts = [name, type_]
    if collation:
        parts.append(f"COLLATE {collation}")
    if identity:
        parts.append(f"GENERATED {'ALWAYS' if identity == 'a' else 'BY DEFAULT'} AS IDENTITY")
        parts.append(f"(SEQUENCE NAME {sequence} {identities.get(sequence, '')})")
    elif default is not None:
        parts.append(f"DEFAULT {default}")
    if not_null:
        parts.append("NOT NULL")
    return " ".join(parts)


def _sequences(
    connection: Connection,
) -> tuple[list[str], list[str], list[str], dict[str, str]]:
    """CREATE SEQUENCE statements, where each stands (setval, run after the rows), OWNED BY
    links to serial columns, and the options of identity columns' sequences by name (those
    are created with their column)."""
    creates, positions, owned, identities = [], [], [], {}
    for row in connection.execute(_SEQUENCE_INFO).fetchall():
        name, type_, start, increment, low, high, cache, cycle, dependency, table, column = row
        options = (
            f"START WITH {start} INCREMENT BY {increment} MINVALUE {low} MAXVALUE {high} "
            f"CACHE {cache}{' CYCLE' if cycle else ' NO CYCLE'}"
        )
        if dependency == "i":
            identities[name] = options
        else:
            creates.append(f"CREATE SEQUENCE {name} AS {type_} {options}")
        if dependency == "a":
            owned.append(f"ALTER SEQUENCE {name} OWNED BY {table}.{column}")
        value = connection.execute(f"SELECT last_value, is_called FROM {name}").fetchone()
        assert value is not None
        literal = name.replace("'", "''")
        positions.append(
            f"SELECT pg_catalog.setval('{literal}', {int(value[0])}, {str(value[1]).lower()})"
        )
    return creates, positions, owned, identities


def restore(connection: Connection, staging: str) -> None:
    """Recreate the schema and rows of a portable dump staged in ``staging`` (in the caller's
    transaction, on a database whose tables were dropped)."""
    with open(os.path.join(staging, "database", "schema.json")) as f:
        schema = json.load(f)
    for statement in schema["before"]:
        connection.execute(statement)
    for table in schema["tables"]:
        query = f"COPY {table['table']} ({table['columns']}) FROM STDIN"
        with (
            open(os.path.join(staging, table["member"]), "rb") as f,
            connection.cursor().copy(query) as copy,
        ):
            while chunk := f.read(1 << 20):
                copy.write(chunk)
    for statement in schema["after"]:
        connection.execute(statement)
