"""What the dispatcher does to every tenant app after its factory returns (DESIGN section 4).

Isolation is built in here rather than left to each factory's good manners:

- :func:`ensure_secret_key`: the tenant's own ``SECRET_KEY``, from its YAML config or its
  instance ``config.py``, else generated once into ``instance/<name>/secret_key`` (0600).
  Whatever else the factory set (a ``"dev"`` default, say) is replaced.
- :func:`isolate_session_cookie`: a cookie name per tenant; path tenants scope the cookie to
  their path, and no tenant may widen it to a parent domain.
- :func:`harden_sqlite`: SQLite engines run in WAL mode with a busy timeout, and begin every
  transaction with ``BEGIN IMMEDIATE`` so a read-then-write never fails "database is locked".
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from typing import Any

from flask import Config, Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from .errors import IsolationError
from .tenant import TenantConfig

SECRET_KEY_FILE = "secret_key"
#: Milliseconds a SQLite connection waits for another's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_instance_folder(path: str) -> None:
    """Create the tenant's instance folder, private to the server's user (0700)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)  # makedirs' mode is reduced by the umask, and not applied if present


def check_instance_path(app: Flask, tenant: TenantConfig) -> None:
    """Refuse an app that ignored the instance folder it was given: it could share files."""
    if os.path.realpath(app.instance_path) != os.path.realpath(tenant.instance_path):
        raise IsolationError(
            f"the factory's app uses instance_path {app.instance_path!r}, not the tenant's "
            f"{tenant.instance_path!r}; pass instance_path=tenant_config.instance_path to Flask()"
        )


def ensure_secret_key(app: Flask, tenant: TenantConfig) -> None:
    """Keep an operator-given key; replace anything else with the tenant's generated key."""
    given = {tenant.config.get("SECRET_KEY"), _instance_config(tenant).get("SECRET_KEY")}
    key = app.config.get("SECRET_KEY")
    if not key or key not in given:
        app.config["SECRET_KEY"] = load_or_create_secret(tenant.instance_path)


def _instance_config(tenant: TenantConfig) -> Config:
    config = Config(tenant.instance_path)
    config.from_pyfile("config.py", silent=True)
    return config


def load_or_create_secret(folder: str) -> str:
    """Read ``folder/secret_key``, creating it first if missing.

    Several uWSGI workers may boot at the same moment: each writes its own temporary file and
    ``os.link``s it into place, which fails if the key exists, so exactly one key wins and
    every worker reads that one.
    """
    path = os.path.join(folder, SECRET_KEY_FILE)
    if not os.path.exists(path):
        temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another worker won: use its key
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    with open(path, encoding="ascii") as f:
        key = f.read().strip()
    if len(key) < 32:
        raise IsolationError(f"{path} holds no usable key; delete it to generate a new one")
    return key


def isolate_session_cookie(app: Flask, tenant: TenantConfig) -> None:
    """Make the session cookie unreachable for every other tenant, in any mount mode.

    The cookie gets the tenant's own name, so two tenants on one host never overwrite each
    other's. A path tenant's cookie is scoped to its path (``/acme`` is not sent to
    ``/acme2``; mounts never nest) and made HttpOnly, since path tenants share an origin and
    another tenant's page could otherwise read it from JavaScript. No tenant may set a cookie
    domain: a host-only cookie is never sent to a sibling subdomain.
    """
    app.config["SESSION_COOKIE_NAME"] = f"session_{tenant.name}"
    app.config["SESSION_COOKIE_DOMAIN"] = None
    if tenant.path is not None:
        app.config["SESSION_COOKIE_PATH"] = tenant.path
        app.config["SESSION_COOKIE_HTTPONLY"] = True
        # url_for outside a request (CLI, shell) builds URLs under the mount too.
        app.config["APPLICATION_ROOT"] = tenant.path


def harden_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout and ``BEGIN IMMEDIATE`` on every connection of a SQLite engine.

    With a deferred ``BEGIN`` (SQLite's default), a transaction that reads and then writes
    fails at once with "database is locked" if another connection wrote in between; the busy
    timeout cannot help. ``BEGIN IMMEDIATE`` takes the write lock up front and waits for it
    (SQLAlchemy's "pysqlite serializable" recipe; Django and Rails do the same). Readers are
    not blocked in WAL mode. Pooled connections are dropped so every one gets the settings.
    """
    if engine.dialect.name != "sqlite" or event.contains(engine, "connect", _on_connect):
        return
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    engine.dispose()


def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None  # let _on_begin emit BEGIN, not the driver
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _on_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
