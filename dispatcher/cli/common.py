"""What every command shares: the tenants file option, loading it, picking tenants by name.

``-f``/``--tenants-file`` is accepted before the command (``python -m dispatcher -f x.yaml
check``) and after it (``python -m dispatcher check -f x.yaml``, DESIGN section 6); both set
the one :class:`Options` object the group puts on ``ctx.obj``::

    @click.command()
    @tenants_file_option
    @click.pass_context
    def check(ctx): tenant_set = load(ctx)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from flask import Flask

from ..build import build_app
from ..errors import BuildError
from ..loader import load_tenants
from ..logs import tenant_context
from ..problems import ConfigError
from ..tenant import TenantConfig, TenantSet

log = logging.getLogger("dispatcher")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_FILE = "tenants.yaml"
_HELP = "The tenants file to read. Defaults to $TENANTS_FILE, then ./tenants.yaml."


@dataclass
class Options:
    """The group's options, on ``ctx.obj`` for every command."""

    tenants_file: str = DEFAULT_FILE


def _set_tenants_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Options).tenants_file = value


def tenants_file_option(command: F) -> F:
    """``-f``/``--tenants-file`` on a command, so it may follow the command's name too."""
    return click.option(
        "-f",
        "--tenants-file",
        expose_value=False,
        callback=_set_tenants_file,
        type=click.Path(dir_okay=False),
        help=_HELP,
    )(command)


def tenants_file(ctx: click.Context) -> str:
    """The tenants file this command reads."""
    return ctx.ensure_object(Options).tenants_file


def load(ctx: click.Context) -> TenantSet:
    """Load the tenants file, or end the command with every problem in it (exit 1)."""
    file = tenants_file(ctx)
    try:
        return load_tenants(file)
    except ConfigError as e:
        raise click.ClickException(f"{file} is not valid:\n{e}") from None


def select(tenant_set: TenantSet, names: Sequence[str], all_: bool) -> list[TenantConfig]:
    """The named enabled tenants (or all of them with ``--all``); a usage error otherwise."""
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


def build_or_fail(tenant: TenantConfig, create_database: bool = False) -> Flask:
    """Build a tenant's app in its logging context; a failure is logged and reported."""
    with tenant_context(tenant.name):
        try:
            return build_app(tenant, create_database=create_database)
        except BuildError as e:  # the reason is in the message; the tenant's traceback, if any
            log.error("tenant '%s' failed to build: %s", tenant.name, e, exc_info=e.__cause__)
            raise click.ClickException(f"{tenant.name}: failed: {e}") from None
        except Exception as e:
            log.exception("tenant '%s' failed to build", tenant.name)
            raise click.ClickException(f"{tenant.name}: failed: {type(e).__name__}: {e}") from None
