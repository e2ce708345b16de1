"""Commands that change tenants' databases: ``init-db``, ``migrate`` and ``copy-db``."""

from __future__ import annotations

import logging
import time
from collections import Counter

import click

from ..copydb import copy_database
from ..database import dispose_engines
from ..logs import configure_logging, tenant_context
from ..migrate import migrate_tenants
from ..rules import without_secrets
from .common import (
    build_or_fail,
    load,
    select,
    tenants_file,
    tenants_file_option,
)


@click.command("init-db")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every enabled tenant.")
@tenants_file_option
@click.pass_context
def init_db(ctx: click.Context, names: tuple[str, ...], all_: bool) -> None:
    """Create each tenant's database (PostgreSQL: CREATE DATABASE if missing) and its schema.

    A new database gets the app's migrations up to head (or create_all() for an app without
    migrations); an existing one is left as it is (python -m dispatcher migrate upgrades it).

    Tenants in maintenance are included: this is how an operator prepares one. Exits 1 if
    any tenant failed; the others are still done.
    """
    tenants = select(load(ctx), names, all_)
    configure_logging()
    failed = []
    for tenant in tenants:
        try:
            dispose_engines(build_or_fail(tenant, create_database=True))
        except click.ClickException as e:
            failed.append(tenant.name)
            click.echo(e.format_message(), err=True)
        else:
            click.echo(f"{tenant.name}: schema ready")
    if failed:
        raise click.ClickException(f"init-db failed for {', '.join(failed)}")


@click.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every enabled tenant.")
@click.option("-j", "--jobs", default=1, type=click.IntRange(1), help="Tenants migrated at once.")
@click.option("--dry-run", is_flag=True, help="Show what would be upgraded; change nothing.")
@tenants_file_option
@click.pass_context
def migrate(
    ctx: click.Context, names: tuple[str, ...], all_: bool, jobs: int, dry_run: bool
) -> None:
    """Upgrade each tenant's database to its app's newest migration (Flask-Migrate).

    Prints one line per tenant: name, revision before -> after, time, and ok / up to date /
    would upgrade / no migrations / failed. A tenant being upgraded answers 503 on every worker
    meanwhile. A failing tenant does not stop the others; the command then exits 1 naming it.
    """
    tenant_set = load(ctx)
    tenants = select(tenant_set, names, all_)
    configure_logging(logging.WARNING)  # one line per tenant, not Alembic's progress
    started = time.perf_counter()
    counts: Counter[str] = Counter()
    failed = []
    for result in migrate_tenants(tenant_set, [t.name for t in tenants], jobs, dry_run):
        counts[result.status] += 1
        click.echo(str(result), err=result.failed)
        if result.failed:
            failed.append(result.name)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    click.echo(f"{len(tenants)} tenant(s) in {time.perf_counter() - started:.1f} s: {summary}")
    if failed:
        raise click.ClickException(f"migration failed for {', '.join(failed)}")


@click.command("copy-db")
@click.argument("name")
@click.option("--to", "target", required=True, help="The SQLAlchemy URL of the new database.")
@tenants_file_option
@click.pass_context
def copy_db(ctx: click.Context, name: str, target: str) -> None:
    """Copy tenant NAME's database (schema and rows) to a new one, e.g. SQLite to PostgreSQL.

    The tenant answers 503 on every worker while its rows are copied; the counts of every
    table are compared afterwards. The target database is created if missing and must be
    empty. tenants.yaml is not changed: set the tenant's database to the new URL once done.
    """
    tenant_set = load(ctx)
    tenant = select(tenant_set, [name], False)[0]
    configure_logging(logging.WARNING)
    with tenant_context(name):
        try:
            copied = copy_database(tenant_set, tenant, target)
        except Exception as e:
            raise click.ClickException(
                f"{name}: copy failed, the source database is untouched: {e}"
            ) from None
    for table, rows in copied:
        click.echo(f"{table}: {rows} row(s) copied and verified")
    click.echo(
        f"Done. Now set 'database: {without_secrets(target)}' on tenant '{name}' in "
        f"{tenants_file(ctx)} (a password belongs in ${{VAR}} or instance/{name}/config.py)."
    )


COMMANDS = (init_db, migrate, copy_db)
