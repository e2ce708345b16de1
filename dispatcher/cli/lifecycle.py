"""Commands for a tenant's data as a whole: ``backup``, ``restore``, ``archive`` and ``clone``.

Each prints what it did (archive paths, row counts per table); a failure is one message on
stderr with exit status 1, and nothing changed; a tenant name not in the file, or a missing
archive file, is a usage mistake (exit status 2). See docs/operations.md, "Backups and
restores"::

    python -m dispatcher backup --all
    python -m dispatcher restore instance/.backups/acme-20261201T030000Z.tar.gz --force
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import click

from .. import rules
from ..archiving import archive_tenant, archived, removed_tenant
from ..backup import NothingToBackUp, backup_tenant, default_folder
from ..backup_archive import read_manifest
from ..errors import DispatcherError
from ..lifecycle import clone as clone_tenant
from ..lifecycle import restore as restore_archive
from ..logs import configure_logging, tenant_context
from ..tenant import TenantConfig, TenantSet
from .common import load, tenants_file_option


@click.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every enabled tenant, maintenance ones too.")
@click.option(
    "--to",
    "folder",
    type=click.Path(file_okay=False),
    help="The folder for the archives (created if missing). Default: <instance_root>/.backups.",
)
@tenants_file_option
@click.pass_context
def backup(ctx: click.Context, names: tuple[str, ...], all_: bool, folder: str | None) -> None:
    """Back up each tenant while it serves: one archive file per tenant, its path printed.

    An archive holds the tenant's database (a consistent snapshot: SQLite's online backup;
    on PostgreSQL pg_dump, or a portable dump when no pg_dump as new as the server is
    installed), its instance files (secret_key, config.py, uploads) and a manifest (app,
    schema revision, row counts per table, checksums). It is written under a temporary name
    and renamed when complete. A tenant that has never served (no database, no files) is
    skipped. A failing tenant does not stop the others; the command then exits 1 naming it.
    """
    tenant_set = load(ctx)
    tenants = _named(tenant_set, names, all_)
    configure_logging(logging.WARNING)
    folder = folder or default_folder(tenant_set.instance_root)
    failed = []
    for tenant in tenants:
        with tenant_context(tenant.name):
            try:
                taken = backup_tenant(tenant, folder)
            except NothingToBackUp:
                click.echo(f"{tenant.name}: skipped, nothing to back up yet (it never served)")
                continue
            except Exception as e:  # the next tenant is still backed up
                failed.append(tenant.name)
                click.echo(f"{tenant.name}: failed: {_reason(e)}", err=True)
                continue
        click.echo(str(taken))
        for note in taken.notes:
            click.echo(f"{tenant.name}: {note}")
    if failed:
        raise click.ClickException(f"backup failed for {', '.join(failed)}")


@click.command()
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--as", "as_name", metavar="NAME", help="Restore the data into tenant NAME.")
@click.option("--force", is_flag=True, help="Replace a tenant that has data (backed up first).")
@tenants_file_option
@click.pass_context
def restore(ctx: click.Context, archive: str, as_name: str | None, force: bool) -> None:
    """Put ARCHIVE back into its tenant, or with --as into another tenant of the same app.

    The archive is verified first (checksums, the tenant's app, a schema revision the code
    knows). Into its own tenant every instance file comes back, secret_key included; --as
    copies the data only, never secret_key or config.py. A tenant that has data is replaced
    only with --force, after it is backed up (path printed). Meanwhile the tenant answers 503
    on every worker; afterwards every worker serves the restored data. Prints the row counts
    it verified. An archive older than the app's newest migration is upgraded to it.
    """
    tenant_set = load(ctx)
    configure_logging(logging.WARNING)
    try:
        manifest = read_manifest(archive)
    except DispatcherError as e:
        raise click.ClickException(str(e)) from None
    name = as_name or manifest.tenant
    hint = "" if as_name else " (the archive's tenant; give another with --as NAME)"
    target = _tenant(tenant_set, name, hint)
    click.echo(
        f"Archive {archive}: tenant {manifest.tenant}, app {manifest.app}, revision "
        f"{manifest.revision or '-'}, taken {manifest.created_at}"
    )
    with tenant_context(name):
        try:
            done = restore_archive(
                tenant_set, archive, target, own_files=as_name is None, force=force, say=click.echo
            )
        except Exception as e:
            raise click.ClickException(f"{name}: not restored: {_reason(e)}") from None
    click.echo(f"Restored into {name}; rows per table, verified:")
    _print_rows(done.tables)
    if done.upgraded:
        click.echo(f"Schema upgraded from {done.upgraded[0]} to {done.upgraded[1]}.")


@click.command()
@click.argument("source")
@click.argument("name")
@tenants_file_option
@click.pass_context
def clone(ctx: click.Context, source: str, name: str) -> None:
    """Copy tenant SOURCE's data into tenant NAME, which must have none (e.g. a staging copy).

    SOURCE keeps serving; NAME answers 503 while the data is put in place. NAME keeps its
    own secret key (one is generated if it has none); SOURCE's config.py is not copied.
    """
    tenant_set = load(ctx)
    configure_logging(logging.WARNING)
    origin, target = _tenant(tenant_set, source), _tenant(tenant_set, name)
    with tenant_context(name):
        try:
            done = clone_tenant(tenant_set, origin, target, say=click.echo)
        except Exception as e:
            raise click.ClickException(f"{name}: not cloned: {_reason(e)}") from None
    click.echo(f"Cloned {source} into {name}; rows per table, verified:")
    _print_rows(done.tables)


@click.command("archive")
@click.argument("name")
@click.option("--drop-database", is_flag=True, help="Also drop its PostgreSQL database.")
@tenants_file_option
@click.pass_context
def archive(ctx: click.Context, name: str, drop_database: bool) -> None:
    """Put away tenant NAME, removed from the file or set to 'enabled: false'.

    It is backed up into <instance_root>/.backups first, then its instance folder is moved
    to <instance_root>/.archive/. A PostgreSQL database is kept unless --drop-database. A
    removed tenant's app and database are those the file's defaults give it. `list
    --archived` shows what is kept.
    """
    tenant_set = load(ctx)
    configure_logging(logging.WARNING)
    listed = any(t.name == name for t in tenant_set)
    if not listed:
        folder = os.path.join(tenant_set.instance_root, name)
        if not rules.NAME.fullmatch(name) or not os.path.isdir(folder):
            raise click.UsageError(
                f"No tenant named '{name}' in {tenant_set.file}, and no instance folder "
                f"{folder}: nothing to archive."
            )
    with tenant_context(name):
        try:
            tenant = tenant_set[name] if listed else removed_tenant(tenant_set, name)
            done = archive_tenant(tenant_set, tenant, drop_database=drop_database)
        except Exception as e:
            raise click.ClickException(f"{name}: not archived: {_reason(e)}") from None
    if done.backup is not None:
        click.echo(str(done.backup))
    click.echo(f"{name}: instance folder moved to {done.folder}")
    if done.dropped:
        click.echo(f"{name}: database {done.database} dropped")
    elif not done.database.startswith("sqlite"):
        click.echo(f"{name}: database {done.database} kept (--drop-database drops it)")
    for note in done.notes:
        click.echo(f"{name}: {note}")


def echo_archived(tenant_set: TenantSet) -> None:
    """``list --archived``: one row per archived tenant."""
    records = archived(tenant_set.instance_root)
    if not records:
        click.echo(f"No archived tenants in {tenant_set.instance_root}.")
        return
    rows = [("NAME", "ARCHIVED", "APP", "DATABASE", "BACKUP", "FOLDER")]
    for r in records:
        database = str(r.get("database", "?")) + (" (dropped)" if r.get("database_dropped") else "")
        rows.append(
            (
                str(r.get("tenant", "?")),
                str(r.get("archived_at", "?")),
                str(r.get("app", "?")),
                database,
                str(r.get("backup") or "-"),
                str(r["folder"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]))


def _named(tenant_set: TenantSet, names: Sequence[str], all_: bool) -> list[TenantConfig]:
    """The named tenants, disabled ones too (their data is still there); ``--all``: enabled."""
    if all_ == bool(names):
        raise click.UsageError("Name one or more tenants, or pass --all.")
    if all_:
        return list(tenant_set.enabled)
    return [_tenant(tenant_set, name) for name in dict.fromkeys(names)]


def _tenant(tenant_set: TenantSet, name: str, hint: str = "") -> TenantConfig:
    for tenant in tenant_set:
        if tenant.name == name:
            return tenant
    raise click.UsageError(
        f"No tenant named '{name}' in {tenant_set.file}{hint}; "
        "`python -m dispatcher list` shows them."
    )


def _print_rows(tables: dict[str, int]) -> None:
    width = max((len(name) for name in tables), default=0)
    for table, rows in sorted(tables.items()):
        click.echo(f"  {table.ljust(width)}  {rows:>10,}")


def _reason(error: Exception) -> str:
    """A dispatcher error's own sentence; anything else with its type, on one line."""
    if isinstance(error, DispatcherError):
        return str(error)
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"


COMMANDS = (backup, restore, archive, clone)
