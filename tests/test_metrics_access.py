"""Who may read /_dispatcher/metrics (``metrics: {allow: [...]}``), and what everyone else
sees: exactly the 404 of an unknown path (DESIGN section 11)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from werkzeug.test import Client

from dispatcher import ConfigError, Dispatcher, load_tenants
from dispatcher.metrics_access import allowed

LOOPBACK = tuple(map(ipaddress.ip_network, ("127.0.0.0/8", "::1")))


@pytest.mark.parametrize(
    ("address", "headers", "expected"),
    [
        ("127.0.0.1", {}, True),
        ("127.8.9.10", {}, True),
        ("::1", {}, True),
        ("::ffff:127.0.0.1", {}, True),  # IPv4-mapped, as a dual-stack socket reports it
        ("10.0.0.1", {}, False),
        ("::2", {}, False),
        ("fe80::1%eth0", {}, False),
        ("", {}, False),
        ("/run/dispatcher/uwsgi.sock", {}, False),  # not an address at all
        ("localhost", {}, False),
        # Came through a proxy: never a loopback client, whatever the headers say.
        ("127.0.0.1", {"HTTP_X_FORWARDED_FOR": "127.0.0.1"}, False),
        ("127.0.0.1", {"HTTP_FORWARDED": "for=127.0.0.1"}, False),
        ("::1", {"HTTP_X_REAL_IP": "::1"}, False),
    ],
)
def test_allow_rule(address: str, headers: dict[str, str], expected: bool) -> None:
    assert allowed({"REMOTE_ADDR": address, **headers}, LOOPBACK) is expected


def test_allowed_networks_of_both_families() -> None:
    networks = tuple(map(ipaddress.ip_network, ("10.0.0.0/8", "2001:db8::/32")))
    assert allowed({"REMOTE_ADDR": "10.20.30.40"}, networks)
    assert allowed({"REMOTE_ADDR": "2001:db8::7"}, networks)
    assert allowed({"REMOTE_ADDR": "10.1.1.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}, networks)
    assert not allowed({"REMOTE_ADDR": "127.0.0.1"}, networks)
    assert not allowed({"REMOTE_ADDR": "2001:db9::1"}, networks)
    assert not allowed({"REMOTE_ADDR": "10.0.0.1"}, ())


TENANTS = """
    version: 1
    server_names: [localhost]
    defaults: {{app: tests.apps.echo}}
    {settings}
    tenants:
      acme: {{path: /acme}}
"""


def client(make_dispatcher: Callable[[str], Dispatcher], settings: str = "") -> Client:
    return Client(make_dispatcher(TENANTS.format(settings=settings)))


def get(c: Client, path: str, address: str, **headers: str):
    return c.get(
        path,
        headers={"Host": "localhost", **headers},
        environ_base={"REMOTE_ADDR": address},
        buffered=True,
    )


def assert_same_as_unknown_path(c: Client, address: str, **headers: str) -> None:
    refused = get(c, "/_dispatcher/metrics", address, **headers)
    unknown = get(c, "/_dispatcher/nothing-here", address, **headers)
    assert refused.status_code == 404
    assert refused.data == unknown.data
    assert refused.headers == unknown.headers


def test_loopback_reads_the_metrics_by_default(make_dispatcher) -> None:
    c = client(make_dispatcher)
    get(c, "/acme/", "127.0.0.1")
    reply = get(c, "/_dispatcher/metrics", "127.0.0.1")
    assert reply.status_code == 200
    assert reply.headers["Cache-Control"] == "no-store"
    assert 'dispatcher_tenant_state{state="ready",tenant="acme"} 1.0' in reply.text
    assert get(c, "/_dispatcher/metrics", "::1").status_code == 200


@pytest.mark.parametrize("address", ["10.0.0.1", "192.0.2.7", "2001:db8::1", ""])
def test_anyone_else_gets_the_404_of_an_unknown_path(make_dispatcher, address: str) -> None:
    assert_same_as_unknown_path(client(make_dispatcher), address)


def test_allow_empty_turns_the_endpoint_off(make_dispatcher) -> None:
    c = client(make_dispatcher, "metrics: {allow: []}")
    assert_same_as_unknown_path(c, "127.0.0.1")


def test_a_scraper_on_another_host_is_allowed_by_its_network(make_dispatcher) -> None:
    c = client(make_dispatcher, "metrics: {allow: ['10.0.0.0/8']}")
    assert get(c, "/_dispatcher/metrics", "10.9.8.7").status_code == 200
    assert_same_as_unknown_path(c, "127.0.0.1")


def test_behind_a_trusted_proxy_the_forwarded_client_decides(make_dispatcher) -> None:
    c = client(make_dispatcher, "proxy: {x_for: 1}\n    metrics: {allow: ['10.0.0.0/8', '::1']}")
    # nginx on this host forwards a public client: not allowed, though nginx is loopback.
    assert_same_as_unknown_path(c, "127.0.0.1", **{"X-Forwarded-For": "203.0.113.9"})
    # A forwarded "loopback" client is not a loopback client either.
    assert_same_as_unknown_path(c, "::1", **{"X-Forwarded-For": "::1"})
    # A Prometheus server in the allowed network, through the proxy.
    reply = get(c, "/_dispatcher/metrics", "127.0.0.1", **{"X-Forwarded-For": "10.1.2.3"})
    assert reply.status_code == 200
    # A forged header the proxy does not vouch for (two values, x_for: 1 trusts the last one).
    forged = {"X-Forwarded-For": "10.1.2.3, 203.0.113.9"}
    assert_same_as_unknown_path(c, "127.0.0.1", **forged)


def test_without_proxy_forwarding_headers_are_not_trusted(make_dispatcher) -> None:
    c = client(make_dispatcher, "metrics: {allow: ['10.0.0.0/8']}")
    assert_same_as_unknown_path(c, "192.0.2.1", **{"X-Forwarded-For": "10.1.2.3"})


@pytest.mark.parametrize(
    ("allow", "message"),
    [
        (
            "['10.1.2.3/8']",
            "field 'metrics.allow.0': '10.1.2.3/8' has host bits set. Write '10.0.0.0/8'",
        ),
        (
            "['::1', 'localhost']",
            "field 'metrics.allow.1': 'localhost' is not an IP network or address",
        ),
        ("['10.0.0.0/33']", "field 'metrics.allow.0': '10.0.0.0/33' is not an IP network"),
        ("'127.0.0.1'", "field 'metrics.allow': must be a list"),
    ],
)
def test_bad_networks_are_located_errors(write_tenants, allow: str, message: str) -> None:
    path: Path = write_tenants(TENANTS.format(settings=f"metrics: {{allow: {allow}}}"))
    with pytest.raises(ConfigError) as error:
        load_tenants(path)
    assert f"{path}:5: {message}" in str(error.value)


def test_default_allow_is_this_host(write_tenants) -> None:
    tenant_set = load_tenants(write_tenants(TENANTS.format(settings="")))
    assert tuple(map(str, tenant_set.metrics_allow)) == ("127.0.0.0/8", "::1/128")
