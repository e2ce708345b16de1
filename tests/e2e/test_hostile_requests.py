"""Hostile requests through nginx (DESIGN section 9): a 4xx, never a 5xx, never another tenant.

nginx decodes the path (``%2e``, ``%2F``) and resolves ``.``/``..`` before anything else, and
passes the result as ``PATH_INFO`` (the raw target stays in ``REQUEST_URI``). So the tenant
that answers must be the one named by the first segment of that normalised path, its log line
must name it too, and an encoded slash, which could smuggle a segment past that rule, is
refused (the dispatcher checks ``REQUEST_URI``).
"""

from __future__ import annotations

import pytest

from .client import Reply, fetch
from .servers import wait_for
from .stack import PATH_HOST, PUBLIC, Stack

pytestmark = pytest.mark.e2e

TENANT_NAMES = tuple(PUBLIC)

#: request target -> the tenant that answers 200, or None where a 4xx is the answer.
PATHS = {
    "/acme/../globex/": "globex",
    "/acme/%2e%2e/globex/": "globex",
    "/acme/%2E%2E/globex/": "globex",
    "/acme/./": "acme",
    "/%61cme/": "acme",
    "//acme//": "acme",
    "/_dispatcher/../acme/": "acme",
    "/acme%2F..%2Fglobex/": None,
    "/acme/..%2Fglobex/": None,
    "/acme/%2e%2e%2fglobex/": None,
    "/acme%2fglobex/": None,
    "/../acme/": None,
    "/acme/../../globex/": None,
    "/acme/..": None,
    "/ACME/": None,
    "/acme/%00": None,
    "/acme/%ff": None,
    "/acme/a%0Ab": None,
    "/acme/" + "a" * 6000: None,  # over uWSGI's default 4 KiB buffer: 404, not 502
}

#: Host header (None: no Host header) -> the tenant that answers 200, or None for a 4xx.
PATH_SITE_HOSTS = {
    "APP.Example.COM.": "acme",
    "app.example.com:1": "acme",
    "app.example.com:99999": None,
    "app.example.com:abc": "acme",  # nginx drops a port that is not a number from $host
    "app.example.com@evil.com": None,
    "app.example.com/../umbrella.example.com": None,
    "umbrella.example.com": None,
    "evil.com": None,
    "[::1]": None,
    "": None,
    None: None,
    "a" * 300 + ".example.com": None,
    "a" * 9000: None,
}
SUBDOMAIN_SITE_HOSTS = {
    "UMBRELLA.example.com": "umbrella",
    "umbrella.example.com.": "umbrella",
    "umbrella.example.com:abc": "umbrella",
    "acme.example.com": None,
    "umbrella.example.com.evil.com": None,
    "x" * 63 + ".example.com": None,
    "a." * 120 + "example.com": None,
}


def assert_refused_or_answered_by(reply: Reply, expected: str | None) -> None:
    """``expected`` is the tenant that must answer 200; ``None`` asks for a 4xx naming none."""
    if expected is None:
        assert 400 <= reply.status < 500, (reply.status, reply.text[:300])
        assert not any(name in reply.text for name in TENANT_NAMES), reply.text[:300]
    else:
        assert reply.status == 200, (reply.status, reply.text[:300])
        assert reply.json()["tenant"] == expected


@pytest.mark.parametrize("target, expected", PATHS.items(), ids=lambda v: str(v)[:30])
def test_hostile_path(stack: Stack, target: str, expected: str | None) -> None:
    assert_refused_or_answered_by(stack.https(PATH_HOST, target), expected)


@pytest.mark.parametrize("host, expected", PATH_SITE_HOSTS.items(), ids=lambda v: repr(v)[:30])
def test_odd_host_on_the_path_site(stack: Stack, host: str | None, expected: str | None) -> None:
    site = stack.site
    reply = fetch(site.https_port, "/acme/", host=host, tls=stack.tls, server_name=PATH_HOST)
    assert_refused_or_answered_by(reply, expected)


@pytest.mark.parametrize("host, expected", SUBDOMAIN_SITE_HOSTS.items(), ids=lambda v: repr(v)[:30])
def test_odd_host_on_the_subdomains_site(stack: Stack, host: str, expected: str | None) -> None:
    site = stack.site
    reply = fetch(
        site.https_port, "/", host=host, tls=stack.tls, server_name="umbrella.example.com"
    )
    assert_refused_or_answered_by(reply, expected)


def test_two_host_headers_are_refused(stack: Stack) -> None:
    reply = stack.https(PATH_HOST, "/acme/", headers=[("Host", "umbrella.example.com")])
    assert reply.status == 400


@pytest.mark.parametrize(
    "url, host, expected",
    [
        ("https://umbrella.example.com/", PATH_HOST, "umbrella"),
        ("https://app.example.com/acme/", "umbrella.example.com", "acme"),
        ("https://evil.com/acme/", PATH_HOST, None),
    ],
)
def test_absolute_url_is_routed_by_the_host_nginx_routed_by(
    stack: Stack, url: str, host: str, expected: str | None
) -> None:
    """``GET https://umbrella.example.com/`` with ``Host: app.example.com``: nginx picks the
    server and the node by the URL, so the app must see that host too (passing
    ``$http_host`` would not)."""
    port = stack.site.https_port
    reply = fetch(port, url, host=f"{host}:{port}", tls=stack.tls, server_name=host)
    assert_refused_or_answered_by(reply, expected)


def test_long_cookie_is_served_not_502(stack: Stack) -> None:
    reply = stack.call("acme", "/", headers=[("Cookie", "c=" + "x" * 7000)])
    assert reply.status == 200
    assert reply.json()["tenant"] == "acme"


def test_log_line_names_the_tenant_that_answered(stack: Stack) -> None:
    seen = len(stack.uwsgi.log_text())
    reply = stack.https(PATH_HOST, "/acme/../globex/log")
    assert reply.status == 200

    def app_lines() -> list[str]:
        lines = stack.uwsgi.log_text()[seen:].splitlines()
        return [line for line in lines if "hello from the app" in line]

    lines = wait_for(app_lines, "the app's log line")
    assert len(lines) == 1
    assert "tenant=globex" in lines[0]
