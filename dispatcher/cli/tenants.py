"""Commands that read the tenants file: ``check``, ``list`` and ``diff``."""

from __future__ import annotations

import contextlib
import os

import click

from ..budget import budget_warnings, uwsgi_workers
from ..build import built_app
from ..errors import BuildError
from ..holds import store_for
from ..loader import check_tenants, load_tenants
from ..migrate import database_revision
from ..problems import ConfigError
from ..rules import without_secrets
from ..running import running_text
from ..tenant import TenantConfig
from ..watch import compare
from ..yamlfile import read_text
from .common import load, tenants_file, tenants_file_option
from .lifecycle import echo_archived


@click.command()
@click.option("--processes", type=click.IntRange(1), help="uWSGI processes per node [uwsgi.ini]")
@click.option("--threads", type=click.IntRange(1), help="Threads per process [uwsgi.ini]")
@click.option("--nodes", default=1, show_default=True, type=click.IntRange(1), help="Nodes.")
@tenants_file_option
@click.pass_context
def check(ctx: click.Context, processes: int | None, threads: int | None, nodes: int) -> None:
    """Validate the tenants file and print every problem in it.

    Exits 1 if there is any error. Warnings are printed but do not fail the check. App modules
    are looked up without being imported. For tenants on PostgreSQL, the connections the
    deployment may open (nodes x processes x each tenant's pool) are compared with each
    server's max_connections; processes and threads default to uwsgi.ini's.
    """
    file = tenants_file(ctx)
    tenant_set, problems = check_tenants(file)
    for problem in problems:
        click.echo(str(problem), err=True)
    errors = sum(not p.warning for p in problems)
    if tenant_set is None:
        click.echo(f"{file}: {errors} error(s)", err=True)
        ctx.exit(1)
    ini_processes, ini_threads = uwsgi_workers(os.path.dirname(os.path.abspath(file)))
    for warning in budget_warnings(
        tenant_set, processes or ini_processes, threads or ini_threads, nodes
    ):
        click.echo(f"warning: {warning}", err=True)
    enabled = tenant_set.enabled
    paths = sum(t.path is not None for t in enabled)
    click.echo(
        f"{file}: ok, {len(enabled)} tenant(s) enabled ({paths} by path, "
        f"{len(enabled) - paths} by host), {len(tenant_set) - len(enabled)} disabled"
    )


@click.command("list")
@click.option("--build", is_flag=True, help="Build each eager tenant, as a worker's boot does.")
@click.option("--archived", is_flag=True, help="Show the archived tenants instead.")
@tenants_file_option
@click.pass_context
def list_tenants(ctx: click.Context, build: bool, archived: bool) -> None:
    """Show each tenant's app, mount, database (password hidden), revision and state.

    The state is what the file says (eager, lazy, maintenance, disabled), or maintenance while
    ``migrate`` holds the tenant. With --build, each eager tenant is built here as a worker
    would build it at boot, and shows "ready" or "failed: <reason>". With --archived, the
    tenants put away by ``archive``: when, app, database, backup, folder.
    """
    tenant_set = load(ctx)
    if archived:
        echo_archived(tenant_set)
        return
    with contextlib.closing(store_for(tenant_set)) as holds:
        held = holds.held()
    rows = [("NAME", "APP", "MOUNT", "DATABASE", "REVISION", "STATE")]
    for t in tenant_set:
        state = "maintenance" if t.enabled and t.name in held else t.state
        if build and state == "eager":
            state = _build_state(t)
        revision = database_revision(t.database_uri) if t.enabled else "-"
        database = without_secrets(t.database_uri)
        rows.append((t.name, t.app, t.mount_label, database, revision, state))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]))


def _build_state(tenant: TenantConfig) -> str:
    try:
        with built_app(tenant):
            return "ready"
    except BuildError as e:
        return f"failed: {e}"
    except Exception as e:
        return f"failed: {type(e).__name__}: {e}"


@click.command()
@click.option(
    "--against",
    type=click.Path(exists=True, dir_okay=False),
    help="The earlier version to compare with. Default: the file as the server last loaded it.",
)
@tenants_file_option
@click.pass_context
def diff(ctx: click.Context, against: str | None) -> None:
    """Show what a reload of the edited file would add, remove and rebuild; apply nothing.

    Exits 1 if the edited file is not valid (a reload would then change nothing).
    """
    new = load(ctx)
    if against is None:
        text = running_text(new)
    else:
        text, unreadable = read_text(against)  # bounded, and not UTF-8 is a located problem
        if unreadable is not None:
            raise click.ClickException(str(unreadable))
    if text is None:
        raise click.ClickException(
            f"no running copy in {new.instance_root}: no server has loaded this file yet; "
            "compare with an earlier version using --against FILE"
        )
    try:
        old = load_tenants(tenants_file(ctx), text=text, instance_root=new.instance_root)
    except ConfigError as e:
        raise click.ClickException(f"the earlier version is not valid:\n{e}") from None
    changes = compare({t.name: t for t in old.enabled}, new)
    for sign, names in (("+", changes.added), ("-", changes.removed), ("~", changes.changed)):
        for name in names:
            click.echo(f"{sign} {name}")
    click.echo(str(changes))


COMMANDS = (check, list_tenants, diff)
