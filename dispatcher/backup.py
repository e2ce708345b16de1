"""Back up one tenant, while it serves: its database and its instance files, into one archive.

The database is copied consistently without stopping the tenant: SQLite with the online backup
API (:mod:`.backup_sqlite`), PostgreSQL with pg_dump or the portable dump
(:mod:`.backup_postgres`), the row counts taken from the same snapshot as the rows. The
instance folder's files (``secret_key``, ``config.py``, uploads) go in beside it, except the
database itself, SQLite's journals and the dispatcher's lock and temporary files; another
SQLite file found there is copied with the backup API too. Nothing of the tenant's app is
imported or built. The archive (:mod:`.backup_archive`) goes into a folder, by default
``<instance_root>/.backups/``, named ``<tenant>-<UTC time>.tar.gz``::

    taken = backup_tenant(tenant, default_folder(tenant_set.instance_root))
    print(taken)        # acme: /srv/app/instance/.backups/acme-20261201T030000Z.tar.gz (...)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import make_url

from . import backup_postgres as postgres
from . import backup_sqlite as sqlite
from .backup_archive import Manifest, disk_error, write_archive
from .build import BUILD_LOCK
from .errors import BackupError, IsolationError
from .isolation import SECRET_KEY_FILE, check_own_paths
from .tenant import TenantConfig

#: Under the instance root: where archives go unless ``--to`` says otherwise.
BACKUPS_FOLDER = ".backups"
#: Instance files that belong to the tenant itself, never copied into another (``--as``).
OWN_FILES = (SECRET_KEY_FILE, "config.py")


class NothingToBackUp(BackupError):
    """The tenant has no database and no instance files yet (it never served)."""


def default_folder(instance_root: str) -> str:
    return os.path.join(instance_root, BACKUPS_FOLDER)


def refuse_shared_paths(tenant: TenantConfig) -> None:
    """Refuse a tenant whose instance folder or SQLite file is another tenant's (a symlink):
    backing it up would copy the other's data and secret, restoring into it overwrite them."""
    try:
        check_own_paths(tenant)
    except IsolationError as e:
        raise BackupError(f"tenant '{tenant.name}': {e}; nothing was changed") from None


def backend(tenant: TenantConfig) -> str:
    """``sqlite`` or ``postgresql``: the databases backups support."""
    name = make_url(tenant.database_uri).get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise BackupError(
            f"tenant '{tenant.name}' is on {name}; backups support SQLite and PostgreSQL"
        )
    return name


@dataclass(frozen=True)
class Taken:
    """One archive written."""

    path: str
    manifest: Manifest
    seconds: float
    notes: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        size = os.path.getsize(self.path)
        tables = len(self.manifest.tables)
        return (
            f"{self.manifest.tenant}: {self.path} ({tables} table(s), {self.manifest.rows:,} "
            f"row(s), {len(self.manifest.files)} file(s), {_size(size)}, {self.seconds:.2f} s)"
        )


def backup_tenant(tenant: TenantConfig, folder: str, *, label: str = "") -> Taken:
    """Write one archive of ``tenant`` into ``folder`` (created if missing, 0700)."""
    started = time.perf_counter()
    kind = backend(tenant)
    refuse_shared_paths(tenant)
    folder = os.path.abspath(folder)
    if (os.path.realpath(folder) + os.sep).startswith(
        os.path.realpath(tenant.instance_path) + os.sep
    ):
        raise BackupError(
            f"{folder} is inside tenant '{tenant.name}''s instance folder: the archive would "
            "back itself up. Choose a folder outside it"
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    stem = f"{tenant.name}-{stamp}" + (f"-{label}" if label else "")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with _staging(folder, stem) as staging:
            dump, tables, revision, details, sources = _dump_database(tenant, kind, staging)
            files, notes = instance_files(tenant)
            if dump is None and not files:
                raise NothingToBackUp(
                    f"tenant '{tenant.name}' has no database and no instance files yet "
                    "(it never served): nothing to back up"
                )
            for name in files:
                path = os.path.join(tenant.instance_path, name)
                if sqlite.is_sqlite(path):  # a live SQLite file is never copied as bytes
                    copy = os.path.join(staging, "files", *name.split("/"))
                    os.makedirs(os.path.dirname(copy), mode=0o700, exist_ok=True)
                    sqlite.snapshot(path, copy)
                    path = copy
                sources[f"files/{name}"] = path
            manifest = Manifest(
                tenant=tenant.name,
                app=tenant.app,
                backend=kind,
                dump=dump,
                revision=revision,
                tables=tables,
                created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                details=details,
            )
            path, manifest = write_archive(folder, stem, manifest, sources)
            if "why" in details:  # the operator should know pg_dump was not used, and why
                notes.append(f"portable dump, not pg_dump: {details['why']}")
    except OSError as e:
        raise disk_error(e, f"cannot back up tenant '{tenant.name}' into {folder}") from e
    return Taken(path, manifest, time.perf_counter() - started, tuple(notes))


@contextlib.contextmanager
def _staging(folder: str, stem: str) -> Iterator[str]:
    """A hidden scratch folder beside the archive, removed whatever happens."""
    path = tempfile.mkdtemp(prefix=f".{stem}.", suffix=".tmp", dir=folder)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _dump_database(
    tenant: TenantConfig, kind: str, staging: str
) -> tuple[str | None, dict[str, int], str | None, dict[str, Any], dict[str, str]]:
    """Dump the database into ``staging``: kind, counts, revision, details, members.

    ``None`` as the kind when the database does not exist yet.
    """
    if kind == "sqlite":
        path = sqlite.database_path(tenant.database_uri)
        if path is None:
            raise BackupError(f"tenant '{tenant.name}' uses an in-memory database")
        if not os.path.exists(path):
            return None, {}, None, {}, {}
        copy = os.path.join(staging, "database.sqlite3")
        sqlite.snapshot(path, copy)
        tables, revision = sqlite.describe(copy)
        details: dict[str, Any] = {"page_size": sqlite.page_size(copy)}
        return "sqlite", tables, revision, details, {"database.sqlite3": copy}
    if not postgres.database_exists(tenant.database_uri):
        return None, {}, None, {}, {}
    tables, revision, details = postgres.dump_database(tenant.database_uri, staging)
    dump = details.pop("dump")
    members = {}
    for folder, _, names in os.walk(staging):
        for name in names:
            path = os.path.join(folder, name)
            members[os.path.relpath(path, staging).replace(os.sep, "/")] = path
    return dump, tables, revision, details, dict(sorted(members.items()))


def current_rows(tenant: TenantConfig) -> dict[str, int] | None:
    """Rows per table in the tenant's database now; ``None`` if it has none yet."""
    if backend(tenant) == "postgresql":
        return postgres.current_counts(tenant.database_uri)
    path = sqlite.database_path(tenant.database_uri)
    if path is None or not os.path.exists(path):
        return None
    return sqlite.describe(path)[0]


def instance_files(tenant: TenantConfig) -> tuple[list[str], list[str]]:
    """The instance folder's files to archive (paths relative to it, ``/``-separated), and
    notes about what was left out that an operator might expect in (links, special files)."""
    root = tenant.instance_path
    database = _database_file(tenant)
    files, notes = [], []
    for folder, folders, names in os.walk(root):
        for name in sorted(folders):
            if os.path.islink(os.path.join(folder, name)):
                notes.append(f"left out {os.path.join(folder, name)}: a link to a folder")
        for name in sorted(names):
            path = os.path.join(folder, name)
            if _dispatchers_own(path, name, database):
                continue
            if os.path.islink(path) or not os.path.isfile(path):
                notes.append(f"left out {path}: not a plain file")
                continue
            files.append(os.path.relpath(path, root).replace(os.sep, "/"))
    return sorted(files), notes


def dispatchers_own(tenant: TenantConfig, names: Iterable[str]) -> list[str]:
    """Those of the instance files ``names`` (relative, ``/``-separated) that no archive
    holds: the tenant's database or its journals, a lock or temporary file of the dispatcher."""
    database = _database_file(tenant)
    paths = {name: os.path.join(tenant.instance_path, *name.split("/")) for name in names}
    return [n for n, p in paths.items() if _dispatchers_own(p, os.path.basename(p), database)]


def _database_file(tenant: TenantConfig) -> str | None:
    if backend(tenant) == "sqlite" and (path := sqlite.database_path(tenant.database_uri)):
        return os.path.realpath(path)
    return None


def _dispatchers_own(path: str, name: str, database: str | None) -> bool:
    """The database and its journals, lock files, temporary files of the secret key."""
    if name == BUILD_LOCK or (name.startswith(f"{SECRET_KEY_FILE}.") and name.endswith(".tmp")):
        return True
    if database is not None and os.path.realpath(path) in (
        database + suffix for suffix in ("", *sqlite.COMPANIONS)
    ):
        return True
    return any(
        name.endswith(suffix) and sqlite.is_sqlite(path[: -len(suffix)])
        for suffix in sqlite.COMPANIONS
    )


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{size} B"
