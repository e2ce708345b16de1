"""Scale-out on one machine, as in production: two uWSGI nodes, one nginx, tenants on PostgreSQL.

Each node is its own uWSGI server with its own copy of the same tenants.yaml and its own
instance folder, as on two machines; the tenants' databases live on the PostgreSQL server at
127.0.0.1:5432. nginx runs what ``nginx-config --node ... --node ...`` prints for both nodes
(docs/scaling.md). Skipped without PostgreSQL, except under CI=true.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher import load_tenants
from dispatcher.nginxconf import nginx_config

from .client import fetch
from .servers import Nginx, Tools, Uwsgi, free_port

pytestmark = pytest.mark.e2e

TENANTS = """\
version: 1
server_names: [app.example.com]
create_databases: true
proxy: {{x_for: 1, x_proto: 1, x_host: 1}}
defaults:
  app: tests.apps.echo
  mount: path
  database: postgresql://postgres@127.0.0.1:5432/{prefix}{{name}}
tenants:
  acme:
  globex:
  initech:
"""


@pytest.fixture
def prefix(pg_prefix: str) -> str:
    """The tenants' databases are named after it (dropped afterwards)."""
    return pg_prefix


def test_two_nodes_share_tenants_and_survive_losing_one(
    tools: Tools, tmp_path: Path, prefix: str
) -> None:
    nodes: list[Uwsgi] = []
    ports, sockets = [], []
    for n in (1, 2):
        folder = tmp_path / f"node{n}"
        folder.mkdir()
        (folder / "tenants.yaml").write_text(TENANTS.format(prefix=prefix))
        ports.append(free_port())
        sockets.append(folder / "uwsgi.sock")
        nodes.append(
            Uwsgi.start(
                folder / "uwsgi",
                folder / "tenants.yaml",
                socket=sockets[-1],
                processes=1,
                threads=2,
                options=("--http-socket", f"127.0.0.1:{ports[-1]}"),
            )
        )
    site = nginx_config(
        load_tenants(tmp_path / "node1" / "tenants.yaml"), [f"unix:{s}" for s in sockets]
    )
    nginx = Nginx.start(tools.nginx, tmp_path / "nginx", site)
    try:

        def node(n: int, method: str, path: str, **kwargs: object):  # type: ignore[no-untyped-def]
            return fetch(ports[n], path, host="app.example.com", method=method, **kwargs)

        # A write through node 1 is read through node 2, for every tenant.
        for tenant in ("acme", "globex", "initech"):
            reply = node(0, "POST", f"/{tenant}/items", form={"text": f"{tenant} via node 1"})
            assert reply.status == 201
            assert node(1, "GET", f"/{tenant}/items").json() == {"items": [f"{tenant} via node 1"]}
        # nginx routes by tenant; with node 1 gone every tenant is still served, by node 2.
        nodes[0].stop()
        for tenant in ("acme", "globex", "initech") * 4:
            reply = fetch(nginx.http_port, f"/{tenant}/items", host="app.example.com")
            assert reply.status == 200, (tenant, reply.status)
            assert reply.json() == {"items": [f"{tenant} via node 1"]}
    finally:
        nginx.stop()
        for server in nodes:
            server.stop()
