"""Restore and clone tenants from backups (DESIGN section 12), changing nothing when they cannot.

:func:`restore` checks an archive (:mod:`.backup_archive`: every checksum; same app and
backend as the target; a schema revision the app's migrations know) and stages it in the
instance root before anything is touched. A target with data (a row in any table, or instance
files the archive would replace) is only overwritten with ``force``, and is first backed up
to ``<instance_root>/.backups/`` (``...-before-restore.tar.gz``, kept even if the restore then
fails). Then, with the tenant held in
maintenance on every worker (:func:`dispatcher.holds.held`): the instance files are swapped
by renames (put back if the database fails), the database is written in one transaction INTO
the live one (never a replaced file: see :mod:`.backup_sqlite`), the rows counted against
the manifest, and an archive older than the app's newest migration upgraded to it.
:func:`clone` is a backup of one tenant restored into another::

    done = restore(tenant_set, "acme-20261201T030000Z.tar.gz", tenant_set["acme"], force=True)
    print(done.tables)          # {'alembic_version': 1, 'notes': 10, 'users': 3}
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from . import backup_postgres as postgres
from . import backup_sqlite as sqlite
from . import rules
from .backup import (
    Taken,
    backend,
    backup_tenant,
    current_rows,
    default_folder,
    refuse_shared_paths,
)
from .backup_archive import DUMP_MEMBERS, Opened, disk_error, open_archive, read_manifest
from .build import built_app
from .database import ensure_database, upgrade_to_head
from .errors import BackupError
from .holds import held
from .migrate import head_revision
from .restore_files import InstanceFiles, one_at_a_time, scratch
from .tenant import TenantConfig, TenantSet

Say = Callable[[str], None]


class HasData(BackupError):
    """The target of a restore has data, and ``force`` was not given: nothing was changed."""

    def __init__(self, target: TenantConfig, reason: str) -> None:
        self.target, self.reason = target, reason
        super().__init__(
            f"tenant '{target.name}' has data ({reason}); nothing was changed. Pass --force to "
            "replace it (it is backed up first), or restore into another tenant with --as NAME"
        )


@dataclass(frozen=True)
class Restored:
    """What a restore did."""

    tenant: str
    #: Rows per table, counted in the restored database.
    tables: dict[str, int]
    #: The archive of what the restore replaced, if the target had data.
    replaced: Taken | None = None
    #: (archived revision, head) when the schema was upgraded after the restore.
    upgraded: tuple[str, str] | None = None


def restore(
    tenant_set: TenantSet,
    path: str,
    target: TenantConfig,
    *,
    own_files: bool = True,
    force: bool = False,
    say: Say = lambda line: None,
) -> Restored:
    """Put the archive at ``path`` into ``target``; with ``own_files=False`` (``--as``, clone)
    its ``secret_key`` and ``config.py`` are neither copied nor touched."""
    with one_at_a_time(tenant_set.instance_root):
        return _restore(tenant_set, path, target, own_files=own_files, force=force, say=say)


def _restore(
    tenant_set: TenantSet, path: str, target: TenantConfig, *, own_files: bool, force: bool,
    say: Say,
) -> Restored:  # fmt: skip
    kind = backend(target)
    refuse_shared_paths(target)
    if os.path.realpath(path).startswith(os.path.realpath(target.instance_path) + os.sep):
        raise BackupError(
            f"{path} is inside tenant '{target.name}''s instance folder, which the restore "
            "replaces: move it out first"
        )
    manifest = read_manifest(path)
    migrations = _check_target(tenant_set, manifest.app, manifest.backend, target, kind)
    _check_revision(manifest.revision, migrations, path)
    with scratch(tenant_set.instance_root, target.name) as folder:
        opened = open_archive(path, os.path.join(folder, "archive"))
        if opened.manifest != manifest:
            raise BackupError(f"{path} changed while it was being read; run the restore again")
        _check_staged(opened)
        files = InstanceFiles(target, opened, own_files)
        if not force and (reason := _data(target, files)):
            raise HasData(target, reason)
        with held(tenant_set, target.name, "restoring"):
            reason = _data(target, files)  # again: it may have got data since
            if reason and not force:
                raise HasData(target, reason)
            replaced, backups = None, default_folder(tenant_set.instance_root)
            if reason:
                say(f"{target.name} has data ({reason}); backing it up first")
                replaced = backup_tenant(target, backups, label="before-restore")
                say(f"what the restore replaces is kept in {replaced.path}")
            try:
                files.swap(os.path.join(folder, "replaced"))
                try:
                    _restore_database(target, kind, opened)
                    files.write_sqlite_files()
                except BaseException:
                    files.undo()
                    raise
            except BaseException:
                if replaced is not None:  # kept, though the tenant should be as it was
                    say(f"not restored; the copy of {target.name} stays in {replaced.path}")
                raise
            tables = current_rows(target) or {}
            if manifest.dump is not None and tables != manifest.tables:
                raise BackupError(
                    f"tenant '{target.name}': the restored rows {tables} do not match the "
                    f"archive's {manifest.tables}"
                )
            upgraded = _upgrade(target, manifest.revision, migrations)
    return Restored(target.name, tables, replaced, upgraded)


def clone(
    tenant_set: TenantSet, source: TenantConfig, target: TenantConfig, say: Say = lambda _: None
) -> Restored:
    """Copy ``source``'s data into ``target`` (which must have none): a backup of the source,
    restored into the target without its secret key or ``config.py``."""
    if source.name == target.name:
        raise BackupError("clone copies a tenant into another one; name two tenants")
    _check_target(tenant_set, source.app, backend(source), target, backend(target))
    refuse_shared_paths(target)  # before its rows are read (through the link); the source's
    # are checked by the backup below
    rows = {t: n for t, n in (current_rows(target) or {}).items() if n and t != "alembic_version"}
    if rows:  # the restore checks again (and the files too); this saves backing up the source
        raise _clone_refused(target, ", ".join(f"{n:,} row(s) in {t}" for t, n in rows.items()))
    try:  # beside the instance folders: a failed clone leaves no new folder behind
        holding = tempfile.mkdtemp(
            prefix=f".clone-{target.name}.", suffix=".tmp", dir=tenant_set.instance_root
        )
    except OSError as e:
        raise disk_error(e, f"cannot write in {tenant_set.instance_root}") from e
    try:
        taken = backup_tenant(source, holding)
        with one_at_a_time(tenant_set.instance_root):
            return _restore(tenant_set, taken.path, target, own_files=False, force=False, say=say)
    except HasData as e:
        raise _clone_refused(target, e.reason) from None
    finally:
        shutil.rmtree(holding, ignore_errors=True)


def _clone_refused(target: TenantConfig, reason: str) -> BackupError:
    return BackupError(
        f"tenant '{target.name}' has data ({reason}); nothing was changed. Clone into a tenant "
        "without data, or restore a backup into this one with `restore --as NAME --force`"
    )


def _check_target(
    tenant_set: TenantSet, app: str, archived_backend: str, target: TenantConfig, kind: str
) -> str | None:
    """Same app and database kind; returns the app's migrations folder, if it has one."""
    if app != target.app:
        raise BackupError(
            f"the data is of app '{app}', and tenant '{target.name}' runs '{target.app}': "
            "restore it into a tenant of the same app (--as NAME)"
        )
    if archived_backend != kind:
        raise BackupError(
            f"the data is from a {archived_backend} database, and tenant '{target.name}' is on "
            f"{kind}: restore it into a {archived_backend} tenant, then move it with copy-db"
        )
    return _migrations(tenant_set, target)


def _migrations(tenant_set: TenantSet, tenant: TenantConfig) -> str | None:
    """``<package>/migrations`` of the tenant's app (DESIGN 6), found without importing it."""
    rules.add_import_root(os.path.dirname(os.path.abspath(tenant_set.file)))
    spec = rules.find_spec_without_import(tenant.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = os.path.join(location, "migrations")
        if os.path.isfile(os.path.join(folder, "env.py")):
            return folder
    return None


def _check_revision(revision: str | None, migrations: str | None, path: str) -> None:
    """A revision the code does not know comes from newer code: refuse it."""
    if revision is None or migrations is None:
        return
    known = {script.revision for script in ScriptDirectory(migrations).walk_revisions()}
    unknown = [r for r in revision.split(",") if r not in known]
    if unknown:
        raise BackupError(
            f"{path}: its schema revision {', '.join(unknown)} is not among the app's "
            f"migrations ({migrations}): it was taken with newer code. Deploy that code, "
            "then restore"
        )


def _check_staged(opened: Opened) -> None:
    """The archive holds the dump its manifest names, and a staged SQLite database exactly the
    rows the manifest counts."""
    manifest = opened.manifest
    member = DUMP_MEMBERS.get(manifest.dump or "")
    if manifest.dump is not None and (member is None or member not in opened.staged):
        raise BackupError(
            f"{opened.path} is incomplete: its manifest names a {manifest.dump} dump, and it "
            f"holds no {member or 'such dump'}; use another archive"
        )
    if manifest.dump == "sqlite":
        tables, _ = sqlite.describe(opened.staged["database.sqlite3"])
        if tables != manifest.tables:
            raise BackupError(f"{opened.path}: its database does not hold the rows it lists")


def _data(target: TenantConfig, files: InstanceFiles) -> str | None:
    """Why the target counts as having data (rows, or files the restore would change)."""
    rows = {t: n for t, n in (current_rows(target) or {}).items() if n and t != "alembic_version"}
    if rows:
        return ", ".join(f"{n:,} row(s) in {table}" for table, n in sorted(rows.items()))
    changed = files.changed()
    if changed:
        return f"instance files the archive would replace: {', '.join(changed)}"
    return None


def _restore_database(target: TenantConfig, kind: str, opened: Opened) -> None:
    dump = opened.manifest.dump
    if dump is None:  # the tenant had no database when the archive was taken
        return
    if kind == "sqlite":
        live = sqlite.database_path(target.database_uri)
        if live is None:
            raise BackupError(f"tenant '{target.name}' uses an in-memory database")
        sqlite.restore_into(opened.staged["database.sqlite3"], live)
        return
    uri, manifest = target.database_uri, opened.manifest
    try:
        created = ensure_database(uri)
    except SQLAlchemyError as e:
        raise BackupError(f"cannot create the database {postgres.shown(uri)}: {e}") from None
    try:
        postgres.restore_database(uri, dump, manifest.tables, manifest.details, opened.folder)
    except BaseException:
        if created:  # made here, for this restore: leave nothing behind
            postgres.drop_database(uri)
        raise


def _upgrade(
    target: TenantConfig, revision: str | None, migrations: str | None
) -> tuple[str, str] | None:
    """Bring an archive older than the app's newest migration up to it, still held."""
    if revision is None or migrations is None or "," in revision:
        return None
    head = head_revision(migrations)
    if head is None or revision == head:
        return None
    try:
        with built_app(target, create_schema=False) as app:
            upgrade_to_head(app)
    except Exception as e:
        raise BackupError(
            f"tenant '{target.name}': the data is restored at revision {revision}, but upgrading "
            f"it to {head} failed ({e}); fix the migration, then run "
            f"`python -m dispatcher migrate {target.name}`"
        ) from e
    return revision, head
