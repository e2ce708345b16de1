"""Tenants on PostgreSQL, against the real server at 127.0.0.1:5432 (user postgres).

Skipped with a reason when no server answers, except under CI=true, where they must run.
Every database made here is named ``dtest_<random>_<tenant>`` and dropped afterwards.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from werkzeug.test import Client

from dispatcher import Dispatcher
from dispatcher.cli import main
from dispatcher.database import app_engines
from tests.conftest import postgres

SERVER = "postgresql://postgres@127.0.0.1:5432"
HOST = {"Host": "localhost"}


@pytest.fixture
def prefix(pg_prefix: str) -> str:
    """This module's databases are named after it (dropped afterwards)."""
    return pg_prefix


def databases(prefix: str) -> set[str]:
    with postgres() as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)
        ).fetchall()
    return {name for (name,) in rows}


def tenants(prefix: str, extra: str = "") -> str:
    return f"""
        version: 1
        server_names: [localhost]
        create_databases: true
        {extra}
        defaults:
          app: tests.apps.echo
          mount: path
          database: {SERVER}/{prefix}{{name}}
          pool: {{size: 1, max_overflow: 1}}
        tenants:
          acme:
          globex:
    """


def test_each_tenant_gets_its_own_database(
    prefix: str, make_dispatcher: Callable[[str], Dispatcher]
) -> None:
    dispatcher = make_dispatcher(tenants(prefix))
    assert databases(prefix) == {f"{prefix}acme", f"{prefix}globex"}
    client = Client(dispatcher)
    assert client.post("/acme/items", data={"text": "acme only"}, headers=HOST).status_code == 201
    assert client.get("/acme/items", headers=HOST).json == {"items": ["acme only"]}
    assert client.get("/globex/items", headers=HOST).json == {"items": []}
    app = dispatcher.tenants["acme"].app
    assert app is not None
    (engine,) = app_engines(app)
    assert engine.dialect.driver == "psycopg"
    assert (engine.pool.size(), engine.pool._max_overflow) == (1, 1)  # type: ignore[attr-defined]
    for handle in dispatcher.tenants.values():
        handle.close()


def test_init_db_creates_a_missing_database(
    prefix: str, write_tenants: Callable[[str], object]
) -> None:
    file = write_tenants(tenants(prefix).replace("create_databases: true", ""))
    result = CliRunner().invoke(main, ["-f", str(file), "init-db", "acme"])
    assert result.exit_code == 0, result.output
    assert "acme: schema ready" in result.output
    assert databases(prefix) == {f"{prefix}acme"}


def test_outage_of_one_database_is_isolated_and_recovers(
    prefix: str, make_dispatcher: Callable[[str], Dispatcher]
) -> None:
    dispatcher = make_dispatcher(tenants(prefix))
    client = Client(dispatcher)
    assert client.get("/acme/items", headers=HOST, buffered=True).status_code == 200
    with postgres() as connection:  # take acme's database away, connections and all
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (f"{prefix}acme",),
        )
        connection.execute(f'ALTER DATABASE "{prefix}acme" RENAME TO "{prefix}acme_away"')
    try:
        response = client.get("/acme/items", headers=HOST, buffered=True)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "30"
        assert client.get("/globex/items", headers=HOST, buffered=True).status_code == 200
    finally:
        with postgres() as connection:
            connection.execute(f'ALTER DATABASE "{prefix}acme_away" RENAME TO "{prefix}acme"')
    assert client.get("/acme/items", headers=HOST, buffered=True).status_code == 200  # recovered
    for handle in dispatcher.tenants.values():
        handle.close()


def test_check_warns_when_the_connection_budget_exceeds_max_connections(
    prefix: str, write_tenants: Callable[[str], object]
) -> None:
    many = "\n".join(f"          t{i}:" for i in range(30))
    text = tenants(prefix).replace("          acme:\n          globex:", many)
    file = write_tenants(text.replace("{size: 1, max_overflow: 1}", "{size: 5, max_overflow: 10}"))
    with postgres() as connection:
        row = connection.execute("SHOW max_connections").fetchone()
    limit = int(row[0]) if row else 0
    check = ["-f", str(file), "check"]
    # 30 tenants x min(threads, 15): 30 x 1 per worker fits any server; 2 x 30 x 4 = 240 does
    # not fit PostgreSQL's default of 100.
    quiet = CliRunner().invoke(main, [*check, "--processes", "1", "--threads", "1"])
    assert quiet.exit_code == 0 and "warning" not in quiet.output
    loud = CliRunner().invoke(main, [*check, "--processes", "2", "--threads", "4"])
    assert loud.exit_code == 0
    if limit - 3 < 240:
        assert "may open 240 connections (1 node(s) x 2 process(es) x 120 per worker" in loud.output
        assert f"max_connections {limit}" in loud.output


def test_copy_db_moves_a_tenant_from_sqlite_to_postgresql(
    prefix: str, make_dispatcher: Callable[[str], Dispatcher], tmp_path: Path
) -> None:
    text = """
        version: 1
        server_names: [localhost]
        tenants:
          acme: {app: tenants.notes, path: /acme}
          echo: {app: tests.apps.echo, path: /echo}
    """
    dispatcher = make_dispatcher(text)
    client = Client(dispatcher)
    for i in range(3):
        client.post("/echo/items", data={"text": f"item {i}"}, headers=HOST, buffered=True)
    with sqlite3.connect(tmp_path / "instance" / "acme" / "app.db") as db:
        db.execute("INSERT INTO users (id, username, password_hash) VALUES (7, 'ann', 'x')")
        db.execute(
            "INSERT INTO notes (user_id, title, body, created) "
            "VALUES (7, 'hello', 'world', '2026-01-01 00:00:00')"
        )
    for handle in dispatcher.tenants.values():
        handle.close()
    file = tmp_path / "tenants.yaml"
    for name, tables in (("acme", ["users: 1", "notes: 1"]), ("echo", ["item: 3"])):
        target = f"{SERVER}/{prefix}{name}"
        result = CliRunner().invoke(main, ["-f", str(file), "copy-db", name, "--to", target])
        assert result.exit_code == 0, result.output
        for line in tables:
            assert f"{line} row(s) copied and verified" in result.output
        again = CliRunner().invoke(main, ["-f", str(file), "copy-db", name, "--to", target])
        assert again.exit_code == 1 and "already has rows" in again.output
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=f"{prefix}acme") as db:
        assert db.execute("SELECT username FROM users").fetchall() == [("ann",)]
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() is not None
        # The id sequence moved past the copied rows: a new user gets a fresh id.
        db.execute("INSERT INTO users (username, password_hash) VALUES ('bob', 'y')")
        assert db.execute("SELECT max(id) FROM users").fetchone() == (8,)
