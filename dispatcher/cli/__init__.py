"""``python -m dispatcher``: check, list, create databases, serve, run Flask commands per tenant.

Every command reads the tenants file given by ``-f``/``--tenants-file`` (before or after the
command's name; else ``$TENANTS_FILE``, else ``./tenants.yaml``). A bad file is reported, every
problem at once, with exit status 1::

    python -m dispatcher check
    python -m dispatcher init-db --all
    python -m dispatcher exec acme -- routes

The commands live in modules by concern: :mod:`.tenants` (check, list, diff), :mod:`.databases`
(init-db, migrate, copy-db), :mod:`.run` (serve, shell, exec), :mod:`.lifecycle` (backup,
restore, archive, clone), :mod:`.fleet` (nginx-config, status), :mod:`.top` (top).
"""

from __future__ import annotations

import sys

import click

from . import databases, fleet, lifecycle, run, tenants, top
from .common import DEFAULT_FILE, Options

__all__ = ["main"]


@click.group()
@click.option(
    "-f",
    "--tenants-file",
    envvar="TENANTS_FILE",
    default=DEFAULT_FILE,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The tenants file to read. Defaults to $TENANTS_FILE, then ./tenants.yaml.",
)
@click.pass_context
def main(ctx: click.Context, tenants_file: str) -> None:
    """Host many factory-built Flask apps, one per tenant, from one tenants file."""
    ctx.obj = Options(tenants_file)


for module in (tenants, databases, run, lifecycle, fleet, top):
    for command in module.COMMANDS:
        main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
