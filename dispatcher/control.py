"""Cluster-wide holds and locks in a PostgreSQL "control database" (``control_database:``).

Several nodes serving one tenants file share the tenants' databases, so a migration or a
restore must hold its tenant on every node, and two nodes must never migrate one tenant at
once. The nodes already share PostgreSQL; its engine does the coordination, and nothing else
runs for it (DESIGN section 13):

- ``dispatcher_holds``: one row per held tenant, with an expiry the holder pushes forward while
  it works, so a crashed holder's hold lapses by itself (:data:`HOLD_TTL`).
- ``dispatcher_workers``: each worker's heartbeat and the held tenants it has let go of; a
  holder waits until every live worker of every node has let go (:func:`dispatcher.holds.held`).
- A session advisory lock per tenant, taken on a connection of its own for the whole of the
  work: a second holder of the tenant waits for the first.

The tables are created when first needed. Workers check once a second (two small statements);
if the database cannot be reached they keep the holds they last saw and say so once::

    store = DatabaseHolds("postgresql+psycopg://dispatcher@db/control")
    with held(tenant_set, "acme", "migrating"): ...     # held() picks this store
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import make_url

from .holds import LIVE_SECONDS, HoldError
from .rules import without_secrets

log = logging.getLogger("dispatcher")

#: A hold lapses this many seconds after its holder last pushed it forward.
HOLD_TTL = 30.0

_TABLES = """
CREATE TABLE IF NOT EXISTS dispatcher_holds (
    tenant text PRIMARY KEY,
    reason text NOT NULL,
    holder text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS dispatcher_workers (
    worker text PRIMARY KEY,
    seen_at timestamptz NOT NULL,
    drained text[] NOT NULL
)
"""


_REACHABLE = (
    "Check 'control_database:' in the tenants file: the database must exist and take "
    "connections from this node"
)

#: Seconds between two tries to reach an unreachable control database from a worker's ticks.
RETRY_SECONDS = 10

#: Seconds a connection to the control database may take to open.
CONNECT_TIMEOUT = 5


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection to the database of a SQLAlchemy URL, tables in place."""
    parsed = make_url(url)
    options = {k: v for k, v in parsed.query.items() if isinstance(v, str)}
    conninfo = make_conninfo(
        "",
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        connect_timeout=CONNECT_TIMEOUT,
        **options,
    )
    connection = psycopg.connect(conninfo, autocommit=True)
    # Another node may create them at the same moment: one of the two is refused, harmlessly.
    with contextlib.suppress(psycopg.errors.UniqueViolation):
        connection.execute(_TABLES)
    return connection


class DatabaseHolds:
    """The :class:`~dispatcher.holds.HoldStore` of a fleet, in the control database."""

    def __init__(self, url: str, ttl: float = HOLD_TTL) -> None:
        self.url = url
        self.ttl = ttl
        self.holder = f"{os.uname().nodename}-{os.getpid()}"
        self._connection: psycopg.Connection[Any] | None = None
        self._pid = 0
        self._held: frozenset[str] = frozenset()
        self._unreachable = False
        self._retry_at = 0.0
        #: Per held tenant: the thread pushing its expiry forward, and the event that stops it.
        self._refreshers: dict[str, tuple[threading.Thread, threading.Event]] = {}

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement, connecting (again) first if needed; rows if it returns any."""
        if self._connection is None or self._pid != os.getpid() or self._connection.closed:
            # A connection opened before a fork belongs to the parent: never used here.
            self._connection, self._pid = connect(self.url), os.getpid()
        try:
            cursor = self._connection.execute(sql, params)
        except psycopg.OperationalError:
            self._connection = None
            raise
        return cursor.fetchall() if cursor.description is not None else []

    def _quietly(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]] | None:
        """For the workers' ticks: ``None`` (said once per outage) when unreachable.

        While it is, a new connection is tried at most every :data:`RETRY_SECONDS`: each try
        may wait :data:`CONNECT_TIMEOUT`, on the thread that also follows the tenants file.
        """
        if self._unreachable and time.monotonic() < self._retry_at:
            return None
        try:
            rows = self._execute(sql, params)
        except psycopg.Error as e:
            self._retry_at = time.monotonic() + RETRY_SECONDS
            if not self._unreachable:
                log.error(
                    "control database %s unreachable, keeping the holds last seen: %s. Check "
                    "'control_database:' in the tenants file: the database must exist and "
                    "take connections from this node",
                    without_secrets(self.url),
                    e,
                )
            self._unreachable = True
            return None
        if self._unreachable:
            log.info("control database reachable again")
        self._unreachable = False
        return rows

    def held(self) -> frozenset[str]:
        rows = self._quietly("SELECT tenant FROM dispatcher_holds WHERE expires_at > now()")
        if rows is not None:
            self._held = frozenset(row[0] for row in rows)
        return self._held

    def report(self, worker: str, drained: frozenset[str]) -> None:
        self._quietly(
            "INSERT INTO dispatcher_workers (worker, seen_at, drained) VALUES (%s, now(), %s) "
            "ON CONFLICT (worker) DO UPDATE SET seen_at = now(), drained = EXCLUDED.drained",
            (worker, sorted(drained)),
        )

    def forget(self, worker: str) -> None:
        self._quietly("DELETE FROM dispatcher_workers WHERE worker = %s", (worker,))

    def workers(self) -> dict[str, frozenset[str]]:
        rows = self._execute(
            "SELECT worker, drained FROM dispatcher_workers "
            "WHERE seen_at > now() - make_interval(secs => %s)",
            (LIVE_SECONDS,),
        )
        return {worker: frozenset(drained) for worker, drained in rows}

    def put(self, name: str, why: str) -> None:
        try:
            self._execute(
                "INSERT INTO dispatcher_holds (tenant, reason, holder, expires_at) "
                "VALUES (%s, %s, %s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (tenant) DO UPDATE SET reason = EXCLUDED.reason, "
                "holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at",
                (name, why, self.holder, self.ttl),
            )
        except psycopg.Error as e:
            raise HoldError(
                f"cannot hold '{name}' in the control database {without_secrets(self.url)}: {e}"
                f". {_REACHABLE}"
            ) from None
        stop = threading.Event()
        refresher = threading.Thread(target=self._refresh, args=(name, stop), daemon=True)
        self._refreshers[name] = (refresher, stop)
        refresher.start()

    def _refresh(self, name: str, stop: threading.Event) -> None:
        """Push the hold's expiry forward while the holder lives (its own connection).

        A failed push (the network blinked, the server restarted) is logged and tried again
        on a new connection at the next turn: the hold lapses only if the database stays out
        of reach for its whole time to live.
        """
        connection: psycopg.Connection[Any] | None = None
        try:
            while not stop.wait(0 if connection is None else self.ttl / 3):
                try:
                    if connection is None:
                        connection = connect(self.url)
                    connection.execute(
                        "UPDATE dispatcher_holds "
                        "SET expires_at = now() + make_interval(secs => %s) "
                        "WHERE tenant = %s AND holder = %s",
                        (self.ttl, name, self.holder),
                    )
                except psycopg.Error as e:
                    log.warning(
                        "cannot push the hold of '%s' forward in the control database (%s); "
                        "trying again",
                        name,
                        e,
                    )
                    if connection is not None:
                        connection.close()
                        connection = None
                    stop.wait(1)
        finally:
            if connection is not None:
                connection.close()

    def release(self, name: str) -> None:
        refresher = self._refreshers.pop(name, None)
        if refresher is not None:
            # Joined, so that no connection of this hold outlives its release (a refresher
            # still connecting when a quick hold ended used to, failing once the database went).
            thread, stop = refresher
            stop.set()
            thread.join(CONNECT_TIMEOUT + 1)
        self._execute(
            "DELETE FROM dispatcher_holds WHERE tenant = %s AND holder = %s", (name, self.holder)
        )

    def close(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            self._connection.close()
        self._connection = None

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A session advisory lock on the tenant, on a connection of its own: released when
        the block ends, or when the process dies and the server closes that connection."""
        try:
            connection = connect(self.url)
        except psycopg.Error as e:
            raise HoldError(
                f"cannot reach the control database {without_secrets(self.url)} to lock '{name}': "
                f"{e}. {_REACHABLE}"
            ) from None
        with contextlib.closing(connection):
            key = f"dispatcher tenant {name}"
            connection.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):
                    connection.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
