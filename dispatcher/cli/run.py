"""Commands that run tenants: ``serve`` (all of them) and ``shell``/``exec`` (one)."""

from __future__ import annotations

import click
from flask.cli import FlaskGroup

from ..logs import configure_logging, current_tenant
from ..serve import run_dev_server
from .common import build_or_fail, load, select, tenants_file, tenants_file_option


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=5000, show_default=True, help="Port to bind.")
@click.option("--reload/--no-reload", default=True, help="Restart when code or the file change.")
@tenants_file_option
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, reload: bool) -> None:
    """Serve every tenant with the development server (not for production: use uWSGI)."""
    load(ctx)  # report a bad file before starting anything
    run_dev_server(tenants_file(ctx), host, port, reload)


@click.command()
@click.argument("name")
@tenants_file_option
@click.pass_context
def shell(ctx: click.Context, name: str) -> None:
    """Open a Python shell in tenant NAME's app context."""
    _run_flask_command(ctx, name, ["shell"])


# Click's own parsing splits the line at "--": options before it are ours (-f may follow NAME,
# DESIGN 6) and an unknown one is a usage error before anything is loaded or built; what
# follows it is COMMAND, untouched. Hence no allow_interspersed_args=False (it handed
# "-f FILE" after NAME to the tenant's Flask CLI) and no ignore_unknown_options (it passed an
# unknown option on too, found out only after the tenant was built).
@click.command("exec")
@click.argument("name")
@click.argument(
    "command", nargs=-1, type=click.UNPROCESSED, required=True, metavar="-- COMMAND [ARGS]..."
)
@tenants_file_option
@click.pass_context
def exec_(ctx: click.Context, name: str, command: tuple[str, ...]) -> None:
    """Run a Flask CLI command in tenant NAME's app: exec NAME -- COMMAND [ARGS]...

    Any command of the app's CLI works, its own and Flask's (routes, shell). Options before
    "--" are this command's (-f); the Flask command and its options go after "--".
    """
    _run_flask_command(ctx, name, list(command))


def _run_flask_command(ctx: click.Context, name: str, args: list[str]) -> None:
    tenant = select(load(ctx), [name], False)[0]
    configure_logging()
    current_tenant.set(name)  # this process serves one tenant: its logs carry the name
    app = build_or_fail(tenant)
    group = FlaskGroup(create_app=lambda: app, load_dotenv=False, set_debug_flag=False)
    group.main(args=args, prog_name=f"python -m dispatcher exec {name} --")


COMMANDS = (serve, shell, exec_)
