"""``python -m dispatcher``: check, list, create databases, serve, run Flask commands per tenant.

Every command reads the tenants file given by ``-f``/``--tenants-file`` (or ``$TENANTS_FILE``,
else ``./tenants.yaml``). A bad file is reported, every problem at once, with exit status 1::

    python -m dispatcher check
    python -m dispatcher init-db --all
    python -m dispatcher exec acme -- routes
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import click
from flask import Flask
from flask.cli import FlaskGroup
from sqlalchemy.engine import make_url

from .budget import budget_warnings, uwsgi_workers
from .build import build_app
from .copydb import copy_database
from .database import app_engines
from .logs import configure_logging, current_tenant
from .migrate import database_revision, migrate_tenants
from .problems import ConfigError
from .reload import HOLDS_FOLDER, compare, running_text
from .serve import run_dev_server
from .spec import TenantSet, check_tenants, load_tenants
from .tenant import TenantConfig

log = logging.getLogger("dispatcher")


@click.group()
@click.option(
    "-f",
    "--tenants-file",
    envvar="TENANTS_FILE",
    default="tenants.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The tenants file to read. Defaults to $TENANTS_FILE, then ./tenants.yaml.",
)
@click.pass_context
def main(ctx: click.Context, tenants_file: str) -> None:
    """Host many factory-built Flask apps, one per tenant, from one tenants file."""
    ctx.obj = tenants_file


def _load(ctx: click.Context) -> TenantSet:
    try:
        return load_tenants(ctx.obj)
    except ConfigError as e:
        raise click.ClickException(f"{ctx.obj} is not valid:\n{e}") from None


@main.command()
@click.option("--processes", type=click.IntRange(1), help="uWSGI processes per node [uwsgi.ini]")
@click.option("--threads", type=click.IntRange(1), help="Threads per process [uwsgi.ini]")
@click.option("--nodes", default=1, show_default=True, type=click.IntRange(1), help="Nodes.")
@click.pass_context
def check(ctx: click.Context, processes: int | None, threads: int | None, nodes: int) -> None:
    """Validate the tenants file and print every problem in it.

    Exits 1 if there is any error. Warnings are printed but do not fail the check. App modules
    are looked up without being imported. For tenants on PostgreSQL, the connections the
    deployment may open (nodes x processes x each tenant's pool) are compared with each
    server's max_connections; processes and threads default to uwsgi.ini's.
    """
    tenant_set, problems = check_tenants(ctx.obj)
    for problem in problems:
        click.echo(str(problem), err=True)
    errors = sum(not p.warning for p in problems)
    if tenant_set is None:
        click.echo(f"{ctx.obj}: {errors} error(s)", err=True)
        ctx.exit(1)
    ini_processes, ini_threads = uwsgi_workers(os.path.dirname(os.path.abspath(ctx.obj)))
    for warning in budget_warnings(
        tenant_set, processes or ini_processes, threads or ini_threads, nodes
    ):
        click.echo(f"warning: {warning}", err=True)
    enabled = tenant_set.enabled
    paths = sum(t.path is not None for t in enabled)
    click.echo(
        f"{ctx.obj}: ok, {len(enabled)} tenant(s) enabled ({paths} by path, "
        f"{len(enabled) - paths} by host), {len(tenant_set) - len(enabled)} disabled"
    )


@main.command("list")
@click.option("--build", is_flag=True, help="Build each eager tenant, as a worker's boot does.")
@click.pass_context
def list_tenants(ctx: click.Context, build: bool) -> None:
    """Show each tenant's app, mount, database (password hidden), revision and state.

    The state is what the file says (eager, lazy, maintenance, disabled), or maintenance while
    ``migrate`` holds the tenant. With --build, each eager tenant is built here as a worker
    would build it at boot, and shows "ready" or "failed: <reason>".
    """
    tenant_set = _load(ctx)
    held = _held_tenants(tenant_set)
    rows = [("NAME", "APP", "MOUNT", "DATABASE", "REVISION", "STATE")]
    for t in tenant_set:
        state = "maintenance" if t.enabled and t.name in held else t.state
        if build and state == "eager":
            state = _build_state(t)
        revision = database_revision(t.database_uri) if t.enabled else "-"
        database = _without_secrets(t.database_uri)
        rows.append((t.name, t.app, t.mount_label, database, revision, state))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]))


def _held_tenants(tenant_set: TenantSet) -> set[str]:
    try:
        return set(os.listdir(os.path.join(tenant_set.instance_root, HOLDS_FOLDER)))
    except OSError:
        return set()


def _build_state(tenant: TenantConfig) -> str:
    token = current_tenant.set(tenant.name)
    try:
        app = build_app(tenant)
    except Exception as e:
        return f"failed: {type(e).__name__}: {e}"
    finally:
        current_tenant.reset(token)
    for engine in app_engines(app):
        engine.dispose()
    return "ready"


def _without_secrets(uri: str) -> str:
    """The URL with its password, and any ``?password=``-like query value, hidden."""
    url = make_url(uri)
    query = {k: "***" if "password" in k.lower() else v for k, v in url.query.items()}
    return url.set(query=query).render_as_string(hide_password=True)


def _select(tenant_set: TenantSet, names: Sequence[str], all_: bool) -> list[TenantConfig]:
    if all_ == bool(names):
        raise click.UsageError("Name one or more tenants, or pass --all.")
    if all_:
        return list(tenant_set.enabled)
    known = {t.name: t for t in tenant_set}
    missing = [n for n in names if n not in known]
    if missing:
        raise click.UsageError(
            f"No tenant named {', '.join(map(repr, missing))} in {tenant_set.file}; "
            "`python -m dispatcher list` shows them."
        )
    disabled = [n for n in names if not known[n].enabled]
    if disabled:
        raise click.UsageError(f"Tenant {', '.join(map(repr, disabled))} is disabled.")
    return [known[n] for n in names]


@main.command("init-db")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every enabled tenant.")
@click.pass_context
def init_db(ctx: click.Context, names: tuple[str, ...], all_: bool) -> None:
    """Create each tenant's database (PostgreSQL: CREATE DATABASE if missing) and its schema.

    A new database gets the app's migrations up to head (or create_all() for an app without
    migrations); an existing one is left as it is (python -m dispatcher migrate upgrades it).

    Tenants in maintenance are included: this is how an operator prepares one. Exits 1 if
    any tenant failed; the others are still done.
    """
    tenants = _select(_load(ctx), names, all_)
    configure_logging()
    failed = []
    for tenant in tenants:
        try:
            _build(tenant, create_database=True)
        except click.ClickException as e:
            failed.append(tenant.name)
            click.echo(e.format_message(), err=True)
        else:
            click.echo(f"{tenant.name}: schema ready")
    if failed:
        raise click.ClickException(f"init-db failed for {', '.join(failed)}")


@main.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every enabled tenant.")
@click.option("-j", "--jobs", default=1, type=click.IntRange(1), help="Tenants migrated at once.")
@click.option("--dry-run", is_flag=True, help="Show what would be upgraded; change nothing.")
@click.pass_context
def migrate(
    ctx: click.Context, names: tuple[str, ...], all_: bool, jobs: int, dry_run: bool
) -> None:
    """Upgrade each tenant's database to its app's newest migration (Flask-Migrate).

    Prints one line per tenant: name, revision before -> after, time, and ok / up to date /
    would upgrade / no migrations / failed. A tenant being upgraded answers 503 on every worker
    meanwhile. A failing tenant does not stop the others; the command then exits 1 naming it.
    """
    tenant_set = _load(ctx)
    tenants = _select(tenant_set, names, all_)
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


@main.command()
@click.option(
    "--against",
    type=click.Path(exists=True, dir_okay=False),
    help="The earlier version to compare with. Default: the file as the server last loaded it.",
)
@click.pass_context
def diff(ctx: click.Context, against: str | None) -> None:
    """Show what a reload of the edited file would add, remove and rebuild; apply nothing.

    Exits 1 if the edited file is not valid (a reload would then change nothing).
    """
    new = _load(ctx)
    text = running_text(new) if against is None else Path(against).read_text()
    if text is None:
        raise click.ClickException(
            f"no running copy in {new.instance_root}: no server has loaded this file yet; "
            "compare with an earlier version using --against FILE"
        )
    try:
        old = load_tenants(ctx.obj, text=text, instance_root=new.instance_root)
    except ConfigError as e:
        raise click.ClickException(f"the earlier version is not valid:\n{e}") from None
    changes = compare({t.name: t for t in old.enabled}, new)
    for sign, names in (("+", changes.added), ("-", changes.removed), ("~", changes.changed)):
        for name in names:
            click.echo(f"{sign} {name}")
    click.echo(str(changes))


@main.command("copy-db")
@click.argument("name")
@click.option("--to", "target", required=True, help="The SQLAlchemy URL of the new database.")
@click.pass_context
def copy_db(ctx: click.Context, name: str, target: str) -> None:
    """Copy tenant NAME's database (schema and rows) to a new one, e.g. SQLite to PostgreSQL.

    The tenant answers 503 on every worker while its rows are copied; the counts of every
    table are compared afterwards. The target database is created if missing and must be
    empty. tenants.yaml is not changed: set the tenant's database to the new URL once done.
    """
    tenant_set = _load(ctx)
    tenant = _select(tenant_set, [name], False)[0]
    configure_logging(logging.WARNING)
    token = current_tenant.set(name)
    try:
        copied = copy_database(tenant_set, tenant, target)
    except Exception as e:
        raise click.ClickException(
            f"{name}: copy failed, the source database is untouched: {e}"
        ) from None
    finally:
        current_tenant.reset(token)
    for table, rows in copied:
        click.echo(f"{table}: {rows} row(s) copied and verified")
    click.echo(
        f"Done. Now set 'database: {_without_secrets(target)}' on tenant '{name}' in "
        f"{ctx.obj} (a password belongs in ${{VAR}} or instance/{name}/config.py)."
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=5000, show_default=True, help="Port to bind.")
@click.option("--reload/--no-reload", default=True, help="Restart when code or the file change.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, reload: bool) -> None:
    """Serve every tenant with the development server (not for production: use uWSGI)."""
    _load(ctx)  # report a bad file before starting anything
    run_dev_server(ctx.obj, host, port, reload)


@main.command()
@click.argument("name")
@click.pass_context
def shell(ctx: click.Context, name: str) -> None:
    """Open a Python shell in tenant NAME's app context."""
    _run_flask_command(ctx, name, ["shell"])


@main.command(
    "exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@click.pass_context
def exec_(ctx: click.Context, name: str, command: tuple[str, ...]) -> None:
    """Run a Flask CLI command in tenant NAME's app: exec NAME -- COMMAND [ARGS]...

    Any command of the app's CLI works, its own and Flask's (routes, shell).
    """
    _run_flask_command(ctx, name, list(command))


def _run_flask_command(ctx: click.Context, name: str, args: list[str]) -> None:
    tenant = _select(_load(ctx), [name], False)[0]
    configure_logging()
    current_tenant.set(name)  # this process serves one tenant: its logs carry the name
    app = _build(tenant)
    group = FlaskGroup(create_app=lambda: app, load_dotenv=False, set_debug_flag=False)
    group.main(args=args, prog_name=f"python -m dispatcher exec {name} --")


def _build(tenant: TenantConfig, create_database: bool = False) -> Flask:
    """Build a tenant's app in its logging context; a failure is logged and reported."""
    token = current_tenant.set(tenant.name)
    try:
        return build_app(tenant, create_database=create_database)
    except Exception as e:
        log.exception("tenant '%s' failed to build", tenant.name)
        raise click.ClickException(f"{tenant.name}: failed: {type(e).__name__}: {e}") from None
    finally:
        current_tenant.reset(token)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
