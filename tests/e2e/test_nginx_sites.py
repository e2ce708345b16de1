"""The nginx site that ``nginx-config --tls`` generates, in front of real uWSGI: tenants at
their public URLs, the catch-all server, HTTPS, the reserved prefix, and forwarded headers that
carry the public scheme and host (DESIGN sections 8 and 13)."""

from __future__ import annotations

import hashlib
import socket
import ssl

import pytest

from .client import fetch
from .stack import PATH_HOST, PUBLIC, Stack

pytestmark = pytest.mark.e2e

TENANT_NAMES = tuple(PUBLIC)
#: What the client sends to try to change what the app believes about the request.
SPOOFED = (
    ("X-Forwarded-For", "203.0.113.9"),
    ("X-Forwarded-Proto", "http"),
    ("X-Forwarded-Host", "globex.example.com"),
    ("X-Forwarded-Port", "1"),
    ("X-Forwarded-Prefix", "/globex"),
)


def from_nginx(body: str) -> bool:
    """nginx's own error page (the request never reached uWSGI)."""
    return "<center>nginx</center>" in body


@pytest.mark.parametrize("name", ["acme", "globex", "initech", "umbrella", "hooli"])
def test_tenant_answers_at_its_public_url(stack: Stack, name: str) -> None:
    reply = stack.call(name, "/")
    assert reply.status == 200, reply.text
    data = reply.json()
    assert data["tenant"] == name
    assert data["script_root"] == PUBLIC[name][1]
    # Scheme from X-Forwarded-Proto, host with the client's port (not Debian's bare $host).
    assert data["external"] == stack.public_url(name)
    assert data["secure"] is True


def test_redirects_carry_the_public_scheme_and_host(stack: Stack) -> None:
    slash = stack.call("acme", "")  # werkzeug's redirect of /acme to /acme/
    assert slash.status == 308
    assert slash.headers["location"] == stack.public_url("acme")
    for name in ("probe", "probe-sub"):
        reply = stack.call(name, "/redirect")
        assert reply.status == 302
        assert reply.headers["location"] == stack.public_url(name, "/env")


@pytest.mark.parametrize("host", [PATH_HOST, "umbrella.example.com"])
def test_plain_http_redirects_to_https(stack: Stack, host: str) -> None:
    port = stack.site.http_port
    reply = fetch(port, "/items?page=2", host=f"{host}:{port}")
    assert reply.status == 301
    # nginx's $host has no port: right in production (80 -> 443), wrong only in this test.
    assert reply.headers["location"] == f"https://{host}/items?page=2"


@pytest.mark.parametrize(
    "host",
    [
        "evil.com",
        "localhost",
        "127.0.0.1",
        "app.example.com.evil.com",
        "example.com",
        "nobody.example.com",  # an unknown subdomain
        "acme.example.com",  # a path tenant's name as a subdomain
        "umbrella.example.com.evil.com",
    ],
)
def test_unknown_hosts_are_refused_before_uwsgi(stack: Stack, host: str) -> None:
    site = stack.site
    for reply in (
        fetch(site.https_port, "/acme/", host=host, tls=stack.tls, server_name=PATH_HOST),
        fetch(site.https_port, "/", host=host, tls=stack.tls, server_name="umbrella.example.com"),
        fetch(site.http_port, "/acme/", host=host),
    ):
        assert reply.status == 404
        assert from_nginx(reply.text)
        assert not any(name in reply.text for name in TENANT_NAMES)


def test_a_host_tenant_never_answers_with_a_path_tenant(stack: Stack) -> None:
    """Host routing comes first: /acme/ on umbrella's host is umbrella's (its own 404)."""
    reply = stack.https("umbrella.example.com", "/acme/")
    assert reply.status == 404
    assert not from_nginx(reply.text)
    assert not any(name in reply.text for name in TENANT_NAMES)


@pytest.mark.parametrize("path", ["/", "/nope/", "/acmex/", "/acme-2/items"])
def test_unknown_path_gets_the_dispatchers_404(stack: Stack, path: str) -> None:
    reply = stack.https(PATH_HOST, path)
    assert reply.status == 404
    assert not from_nginx(reply.text)
    assert not any(name in reply.text for name in TENANT_NAMES)


@pytest.mark.parametrize("server_name", [None, "evil.com"])
def test_tls_handshake_refused_without_a_known_server_name(
    stack: Stack, server_name: str | None
) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", stack.site.https_port), timeout=5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        context.wrap_socket(raw, server_hostname=server_name)


def test_health_through_nginx(stack: Stack) -> None:
    sha256 = hashlib.sha256((stack.folder / "tenants.yaml").read_bytes()).hexdigest()
    for host in (PATH_HOST, "umbrella.example.com"):
        reply = stack.https(host, "/_dispatcher/health")
        assert reply.status == 200
        assert reply.json()["tenants"]["ready"] == len(TENANT_NAMES)
        assert reply.json()["tenants_file_sha256"] == sha256
        assert not any(name in reply.text for name in TENANT_NAMES)


@pytest.mark.parametrize(
    "target",
    [
        "/_dispatcher/metrics",
        "/_dispatcher/metrics?x=1",
        "/_dispatcher",
        "/_dispatcher/",
        "/_dispatcher/%6detrics",
        "/_dispatcher//metrics",
        "/_dispatcher/health/../metrics",
        "/acme/../_dispatcher/metrics",
        "/_dispatcher/anything/else",
    ],
)
@pytest.mark.parametrize("host", [PATH_HOST, "umbrella.example.com"])
def test_reserved_paths_other_than_health_are_nginxs_404(
    stack: Stack, host: str, target: str
) -> None:
    """Metrics name tenants: they never leave the node through nginx (DESIGN 11, 13)."""
    reply = stack.https(host, target)
    assert reply.status == 404
    assert from_nginx(reply.text)


@pytest.mark.parametrize("name", ["probe", "probe-sub"])
def test_forwarded_headers_come_from_nginx_not_the_client(stack: Stack, name: str) -> None:
    data = stack.call(name, "/env", headers=SPOOFED).json()
    public_host = f"{PUBLIC[name][0]}:{stack.site.https_port}"
    assert data["forwarded"] == {
        "HTTP_X_FORWARDED_FOR": "127.0.0.1",
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_X_FORWARDED_HOST": public_host,
    }
    assert data["environ"]["HTTP_HOST"] == public_host
    assert data["environ"]["HTTPS"] == "on"
    assert data["remote_addr"] == "127.0.0.1"
    assert data["secure"] is True
    assert data["script_root"] == PUBLIC[name][1]
    assert data["external"] == stack.public_url(name, "/env")


@pytest.mark.parametrize(
    "name, spoofed_host",
    [
        ("acme", "hooli.example.com"),
        ("acme", "umbrella.example.com"),
        ("umbrella", "hooli.example.com"),
        ("umbrella", PATH_HOST),
    ],
)
def test_client_forwarded_host_does_not_change_the_tenant(
    stack: Stack, name: str, spoofed_host: str
) -> None:
    reply = stack.call(name, "/", headers=[("X-Forwarded-Host", spoofed_host)])
    assert reply.status == 200
    assert reply.json()["tenant"] == name
    assert reply.json()["external"] == stack.public_url(name)
