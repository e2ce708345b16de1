"""What the dispatcher does to every tenant app after its factory returns (DESIGN section 4).

Isolation is built in here rather than left to each factory's good manners:

- :func:`ensure_secret_key`: the tenant's own ``SECRET_KEY``, from its YAML config or its
  instance ``config.py``, else generated once into ``instance/<name>/secret_key`` (0600).
  Whatever else the factory set (a ``"dev"`` default, say) is replaced.
- :func:`isolate_session_cookie`: a cookie name per tenant; path tenants scope the cookie to
  their path, and no tenant may widen it to a parent domain.
- :func:`harden_sqlite`: SQLite engines run in WAL mode with a busy timeout, and begin every
  transaction with ``BEGIN IMMEDIATE`` so a read-then-write never fails "database is locked".
- :func:`check_instance_path` and :func:`check_databases`: what the app *really* uses, with
  symlinks resolved, must be the tenant's own folder and database, never another tenant's.
- :class:`SecretKeys`: no two tenants of one dispatcher may end up with the same key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
from typing import Any

from flask import Config, Flask
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from .errors import IsolationError
from .rules import database_key
from .tenant import TenantConfig

SECRET_KEY_FILE = "secret_key"
#: Milliseconds a SQLite connection waits for another's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_instance_folder(path: str) -> None:
    """Create the tenant's instance folder, private to the server's user (0700)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)  # makedirs' mode is reduced by the umask, and not applied if present


def check_instance_path(app: Flask, tenant: TenantConfig) -> None:
    """Refuse an app that does not keep its files in the tenant's own instance folder.

    The app must use the folder it was given, and that folder, symlinks resolved, must be its
    own: not another tenant's (``instance/b -> instance/a``), nor one that another tenant's
    folder also resolves to (two folders linked to one place on another disk).
    """
    if os.path.realpath(app.instance_path) != os.path.realpath(tenant.instance_path):
        raise IsolationError(
            f"the factory's app uses instance_path {app.instance_path!r}, not the tenant's "
            f"{tenant.instance_path!r}; pass instance_path=tenant_config.instance_path to Flask()"
        )
    _check_own_folder(tenant)


def check_own_paths(tenant: TenantConfig) -> None:
    """Refuse a tenant whose instance folder or SQLite database file resolves to another
    tenant's (a symlink): what a build checks of the app, for commands that touch a tenant's
    files without building it (backup, restore, clone, archive)."""
    _check_own_folder(tenant)
    own = make_url(tenant.database_uri)
    if own.get_backend_name() == "sqlite":
        _check_sqlite_file(own, own, tenant)


def _check_own_folder(tenant: TenantConfig) -> None:
    folder = os.path.normpath(tenant.instance_path)
    root, name = os.path.split(folder)
    real, real_root = os.path.realpath(folder), os.path.realpath(root)
    if real == os.path.join(real_root, name):
        return  # the common case: no symlink of its own (the root may be one)
    if _inside(real, real_root):
        raise IsolationError(
            f"its instance folder {folder} resolves to {real}, another tenant's folder; "
            "give each tenant its own folder (remove the symlink)"
        )
    with os.scandir(root) as entries:  # linked elsewhere: no other folder may link there too
        twins = [
            e.path
            for e in entries
            if e.name != name and e.is_symlink() and os.path.realpath(e.path) == real
        ]
    if twins:
        raise IsolationError(
            f"its instance folder {folder} and {twins[0]} both resolve to {real}; "
            "give each tenant its own folder"
        )


def check_databases(app: Flask, tenant: TenantConfig, engines: list[Engine]) -> None:
    """Refuse an app whose engines (binds included) reach anything but the tenant's database.

    What is checked is the engine the app really has, after its factory and instance
    ``config.py`` ran: a SQLite file must be the tenant's own (or another file in its own
    instance folder), symlinks resolved; any other backend must be the tenant's server and
    database. In-memory SQLite is private to the app and always fine.
    """
    own = make_url(tenant.database_uri)
    for engine in engines:
        url = engine.url
        if url.get_backend_name() == "sqlite":
            _check_sqlite_file(url, own, tenant)
        elif database_key(url) != database_key(own):
            raise IsolationError(
                f"its app uses the database {url.render_as_string(hide_password=True)}, not "
                f"the tenant's own {own.render_as_string(hide_password=True)}; the database is "
                "set with 'database:' in tenants.yaml (a password belongs in ${VAR}), never "
                "SQLALCHEMY_DATABASE_URI/SQLALCHEMY_BINDS"
            )


def _check_sqlite_file(url: URL, own: URL, tenant: TenantConfig) -> None:
    if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
        return
    file = os.path.normpath(os.path.join(tenant.instance_path, url.database or ""))
    folder = os.path.normpath(tenant.instance_path)
    own_file = os.path.normpath(own.database or "") if own.get_backend_name() == "sqlite" else ""
    if file != own_file and not _inside(file, folder):
        raise IsolationError(
            f"its app uses the SQLite file {file}, not the tenant's own {own_file or own}; the "
            "database is set with 'database:' in tenants.yaml, never SQLALCHEMY_DATABASE_URI"
        )
    real = os.path.realpath(file)
    # A file in the instance folder may resolve anywhere inside that folder's real place. A
    # file elsewhere (`database: sqlite:////var/db/{name}.db`) must be reached with no symlink
    # at all: another tenant's file could be reached through one the same way.
    if real == file or _inside(real, os.path.realpath(folder)):
        return
    raise IsolationError(
        f"its database file {file} resolves to {real}, outside its own instance folder; "
        "remove the symlink (or point 'database:' at the real file)"
    )


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder + os.sep)


def ensure_secret_key(app: Flask, tenant: TenantConfig) -> None:
    """Keep an operator-given key; replace anything else with the tenant's generated key."""
    given = {tenant.config.get("SECRET_KEY"), _instance_config(tenant).get("SECRET_KEY")}
    key = app.config.get("SECRET_KEY")
    if not key or key not in given:
        app.config["SECRET_KEY"] = load_or_create_secret(tenant.instance_path)


class SecretKeys:
    """The ``SECRET_KEY`` of every tenant built by one dispatcher, by fingerprint.

    Keys given by operators (in YAML or instance ``config.py`` files) could be copied from one
    tenant to another: the second tenant to be built with a key is refused, since either could
    then forge the other's session cookies.
    """

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()

    def claim(self, app: Flask, tenant: TenantConfig) -> None:
        """Record the app's key as the tenant's; refuse it if another tenant has it."""
        fingerprint = hashlib.sha256(str(app.config["SECRET_KEY"]).encode()).hexdigest()
        with self._lock:
            owner = self._owners.setdefault(fingerprint, tenant.name)
        if owner != tenant.name:
            raise IsolationError(
                f"its SECRET_KEY is also tenant '{owner}''s; give each tenant its own key in "
                "instance/<name>/config.py, or remove it to have one generated"
            )

    def keep_only(self, names: set[str]) -> None:
        """Forget the keys of tenants no longer served (a reload removed them)."""
        with self._lock:
            self._owners = {k: v for k, v in self._owners.items() if v in names}


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
