"""Scale-out on one machine, as in production: two uWSGI nodes, one nginx, tenants on PostgreSQL.

Each node is its own uWSGI server with its own copy of the same tenants.yaml and its own
instance folder, as on two machines; the tenants' databases live on the PostgreSQL server at
127.0.0.1:5432. nginx balances over both nodes (the ``upstream`` of docs/scaling.md). Skipped
without PostgreSQL, except under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .client import fetch
from .servers import Nginx, Tools, Uwsgi, free_port, nginx_conf_dir, wait_for

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

NGINX = """\
daemon off;
{user}
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/temp/body;
    uwsgi_temp_path {folder}/temp/uwsgi;
    upstream dispatcher_nodes {{
        server unix:{node1};
        server unix:{node2};
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name app.example.com;
        location / {{
            include {folder}/uwsgi_params;
            uwsgi_param HTTP_HOST $http_host;
            uwsgi_param HTTP_X_FORWARDED_HOST $http_host;
            uwsgi_param HTTP_X_FORWARDED_PROTO $scheme;
            uwsgi_param HTTP_X_FORWARDED_FOR $remote_addr;
            uwsgi_pass dispatcher_nodes;
            uwsgi_next_upstream error timeout;
        }}
    }}
}}
"""


@pytest.fixture
def prefix(pg_prefix: str) -> str:
    """The tenants' databases are named after it (dropped afterwards)."""
    return pg_prefix


def start_nginx(binary: str, folder: Path, sockets: tuple[Path, Path]) -> Nginx:
    (folder / "temp").mkdir(parents=True, exist_ok=True)
    shutil.copy(nginx_conf_dir(binary) / "uwsgi_params", folder / "uwsgi_params")
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    conf = folder / "nginx.conf"
    conf.write_text(
        NGINX.format(folder=folder, user=user, port=port, node1=sockets[0], node2=sockets[1])
    )
    argv = [binary, "-c", str(conf), "-p", f"{folder}/", "-e", str(folder / "error.log")]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    server = Nginx(argv, folder / "nginx.log")
    server.http_port = server.https_port = port
    wait_for(lambda: server.listening(), "nginx to listen", timeout=10)
    return server


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
    nginx = start_nginx(tools.nginx, tmp_path / "nginx", (sockets[0], sockets[1]))
    try:

        def node(n: int, method: str, path: str, **kwargs: object):  # type: ignore[no-untyped-def]
            return fetch(ports[n], path, host="app.example.com", method=method, **kwargs)

        # A write through node 1 is read through node 2, for every tenant.
        for tenant in ("acme", "globex", "initech"):
            reply = node(0, "POST", f"/{tenant}/items", form={"text": f"{tenant} via node 1"})
            assert reply.status == 201
            assert node(1, "GET", f"/{tenant}/items").json() == {"items": [f"{tenant} via node 1"]}
        # nginx balances; with node 1 gone every tenant is still served, by node 2.
        nodes[0].stop()
        for tenant in ("acme", "globex", "initech") * 4:
            reply = fetch(nginx.http_port, f"/{tenant}/items", host="app.example.com")
            assert reply.status == 200, (tenant, reply.status)
            assert reply.json() == {"items": [f"{tenant} via node 1"]}
    finally:
        nginx.stop()
        for server in nodes:
            server.stop()
