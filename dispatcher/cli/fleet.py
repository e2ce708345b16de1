"""Commands for several nodes behind nginx: ``nginx-config`` and ``status`` (DESIGN section 13)."""

from __future__ import annotations

import click

from ..nginxconf import NginxConfigError, Tls, nginx_config, parse_node
from ..status import check_url, disagreement, fleet_health
from .common import load, tenants_file_option


@click.command("nginx-config")
@click.option(
    "--node",
    "nodes",
    multiple=True,
    required=True,
    metavar="HOST:PORT",
    help="A node's DISPATCHER_SOCKET (repeat for each node); unix:/PATH for a local socket.",
)
@click.option("--tls", is_flag=True, help="Serve HTTPS on 443; port 80 only redirects to it.")
@click.option("--cert", metavar="PATH", help="With --tls: the certificate chain (absolute).")
@click.option("--key", metavar="PATH", help="With --tls: its private key (absolute).")
@tenants_file_option
@click.pass_context
def nginx_config_command(
    ctx: click.Context, nodes: tuple[str, ...], tls: bool, cert: str | None, key: str | None
) -> None:
    """Print the nginx configuration for these nodes, serving the tenants file.

    It goes inside nginx's http {} (a sites-enabled file) and needs only nginx's uwsgi_params:
    server names of host tenants and server_names, the path mounts, and an upstream of the
    nodes keyed by tenant, so each node builds only its share of lazy tenants and a node
    that is down is skipped at once. /_dispatcher/health reaches a node; the rest of
    /_dispatcher/ is nginx's 404. Regenerate it when tenants are added or removed.
    """
    try:
        addresses = [parse_node(node) for node in nodes]
        files = _tls_files(tls, cert, key)
    except NginxConfigError as e:
        raise click.UsageError(str(e)) from None
    repeated = sorted({a for a in addresses if addresses.count(a) > 1})
    if repeated:
        raise click.UsageError(f"--node {', '.join(repeated)} is given more than once")
    tenant_set = load(ctx)
    try:
        text = nginx_config(tenant_set, addresses, files)
    except NginxConfigError as e:  # a setting of the file nginx cannot carry out
        raise click.ClickException(str(e)) from None
    click.echo(text, nl=False)


def _tls_files(tls: bool, cert: str | None, key: str | None) -> Tls | None:
    if not tls:
        if cert or key:
            raise NginxConfigError("--cert and --key go with --tls (HTTPS on port 443)")
        return None
    if not cert or not key:
        raise NginxConfigError(
            "--tls needs --cert PATH and --key PATH, e.g. --cert "
            "/etc/letsencrypt/live/example.com/fullchain.pem --key "
            "/etc/letsencrypt/live/example.com/privkey.pem"
        )
    return Tls(cert, key)


@click.command()
@click.argument("urls", nargs=-1, required=True, metavar="URL...")
@click.option(
    "--timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for each node.",
)
@tenants_file_option  # accepted (DESIGN 6), not needed: the nodes say what they serve
def status(urls: tuple[str, ...], timeout: float) -> None:
    """Ask each node which tenants file it serves; exit 1 if they differ or one is silent.

    URL is a node's base URL (http://10.0.0.11:8000) or its DISPATCHER_SOCKET, the address
    nginx uses (uwsgi://10.0.0.11:3031, unix:/run/dispatcher/uwsgi.sock). One line per
    node: URL, the first 12 hex digits of the sha256 of its tenants file (compare with
    `sha256sum tenants.yaml`), and its tenant counts.
    """
    for url in urls:
        problem = check_url(url)
        if problem is not None:
            raise click.BadParameter(f"'{url}': {problem}", param_hint="URL")
    healths = fleet_health(urls, timeout)
    width = max(len(h.url) for h in healths)
    for health in healths:
        click.echo(health.line(width))
    problem = disagreement(healths)
    if problem is not None:
        raise click.ClickException(problem)
    sha256 = healths[0].sha256 or ""
    click.echo(f"ok: {len(healths)} node(s) serve the same tenants file ({sha256[:12]})")


COMMANDS = (nginx_config_command, status)
