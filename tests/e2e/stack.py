"""The whole deployment under test: uWSGI (2 processes x 4 threads) behind nginx.

One :class:`Stack` runs the project's uwsgi.ini on a temporary tenants file (:data:`TENANTS`,
the echo test app and a probe app, path and subdomain tenants, instance folders under the
stack's folder) and nginx in front of it with the site ``nginx-config --tls`` generates for
that file and that one node, HTTPS on a self-signed certificate for ``example.com`` and
``*.example.com``::

    with Stack.running(folder, nginx="/usr/sbin/nginx", certs=cert_dir) as stack:
        reply = stack.call("acme", "/")          # https://app.example.com:<port>/acme/
"""

from __future__ import annotations

import contextlib
import sqlite3
import ssl
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dispatcher import load_tenants
from dispatcher.nginxconf import Tls, nginx_config

from .client import Reply, fetch
from .servers import Nginx, Uwsgi

TENANTS = """\
version: 1
base_domain: example.com
server_names: [app.example.com]
instance_root: instance
proxy: {x_for: 1, x_proto: 1, x_host: 1}
# Above the 4 threads: these load tests send one tenant more concurrent requests than the
# default limit (threads - 1, DESIGN 11), which tests/e2e/test_metrics.py tests on its own.
defaults: {app: tests.apps.echo, limits: {concurrent: 8}}
tenants:
  acme: {path: /acme}
  globex: {path: /globex}
  initech: {path: /initech}
  umbrella: {subdomain: umbrella}
  hooli: {subdomain: hooli}
  probe: {path: /probe, app: tests.e2e.probe_app}
  probe-sub: {subdomain: probe, app: tests.e2e.probe_app}
"""
PATH_HOST = "app.example.com"
#: tenant -> (public host, path prefix); path tenants answer on PATH_HOST.
PUBLIC = {
    "acme": (PATH_HOST, "/acme"),
    "globex": (PATH_HOST, "/globex"),
    "initech": (PATH_HOST, "/initech"),
    "umbrella": ("umbrella.example.com", ""),
    "hooli": ("hooli.example.com", ""),
    "probe": (PATH_HOST, "/probe"),
    "probe-sub": ("probe.example.com", ""),
}
#: Tenants of the echo app, which stores items: two by path, two by subdomain.
WRITERS = ("acme", "globex", "umbrella", "hooli")


def make_certificate(folder: Path, openssl: str) -> Path:
    """A self-signed certificate for example.com and *.example.com, named as certbot names it."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    names = (
        "-subj",
        "/CN=example.com",
        "-addext",
        "subjectAltName=DNS:example.com,DNS:*.example.com",
    )
    files = ("-keyout", folder / "privkey.pem", "-out", folder / "fullchain.pem")
    argv = [openssl, "req", "-x509", "-days", "2", *key, *names, *files]
    subprocess.run([str(a) for a in argv], check=True, capture_output=True)
    return folder


def site_for(tenants_file: Path, nodes: list[str], certs: Path) -> str:
    """What ``nginx-config --tls`` prints for this file, these nodes and the test certificate."""
    tls = Tls(str(certs / "fullchain.pem"), str(certs / "privkey.pem"))
    return nginx_config(load_tenants(tenants_file), nodes, tls)


@dataclass
class Stack:
    folder: Path
    uwsgi: Uwsgi
    site: Nginx
    tls: ssl.SSLContext

    @classmethod
    @contextlib.contextmanager
    def running(cls, folder: Path, *, nginx: str, certs: Path) -> Iterator[Stack]:
        tenants_file = folder / "tenants.yaml"
        tenants_file.parent.mkdir(parents=True, exist_ok=True)
        tenants_file.write_text(TENANTS)
        tls = ssl.create_default_context(cafile=str(certs / "fullchain.pem"))
        socket = folder / "uwsgi.sock"
        with contextlib.ExitStack() as servers:
            uwsgi = Uwsgi.start(folder / "uwsgi", tenants_file, socket=socket)
            servers.callback(uwsgi.stop)
            site = site_for(tenants_file, [f"unix:{socket}"], certs)
            server = Nginx.start(nginx, folder / "nginx", site)
            servers.callback(server.stop)
            yield cls(folder, uwsgi, server, tls)

    def https(self, host: str, target: str, **kwargs) -> Reply:
        """A request over HTTPS with ``Host: host:port``, as a browser sends it."""
        port = self.site.https_port
        return fetch(port, target, host=f"{host}:{port}", tls=self.tls, **kwargs)

    def call(self, tenant: str, path: str, **kwargs) -> Reply:
        """A request to ``path`` of ``tenant`` at its public URL."""
        host, prefix = PUBLIC[tenant]
        return self.https(host, prefix + path, **kwargs)

    def public_url(self, tenant: str, path: str = "/") -> str:
        host, prefix = PUBLIC[tenant]
        return f"https://{host}:{self.site.https_port}{prefix}{path}"

    def post_item(self, tenant: str, text: str) -> int | str:
        """POST an item; the status, or the name of the error if no response came."""
        try:
            return self.call(tenant, "/items", method="POST", form={"text": text}).status
        except OSError as e:
            return type(e).__name__

    def stored_items(self, tenants: Iterable[str]) -> set[str]:
        """Every item text in those tenants' SQLite files, read directly."""
        texts: set[str] = set()
        for tenant in tenants:
            database = self.folder / "instance" / tenant / "app.db"
            with contextlib.closing(sqlite3.connect(database, timeout=10)) as db:
                texts.update(row[0] for row in db.execute("SELECT text FROM item"))
        return texts
