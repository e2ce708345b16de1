"""Who may read ``/_dispatcher/metrics``: the clients ``metrics: {allow: [...]}`` lets in.

The metrics name every tenant, so they answer only clients in the allowed networks (default:
this host, ``127.0.0.0/8`` and ``::1``); everyone else gets the plain 404 of an unknown path.
The client is the address ``proxy:`` establishes (werkzeug's ``ProxyFix`` has already put it in
``REMOTE_ADDR``). A request that carries forwarding headers came through a proxy, so it is never
taken for a loopback client, whatever those headers say and whether ``proxy:`` trusts them: a
proxy on this host must not open the metrics to the clients it forwards::

    allowed({"REMOTE_ADDR": "127.0.0.1"}, tenant_set.metrics_allow)      # True by default
    allowed({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}, ...)  # False
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .tenant import Network

#: Headers by which a proxy says whom it forwards for (RFC 7239 ``Forwarded`` and the usual
#: de-facto ones).
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def client_address(
    environ: WSGIEnvironment,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address (``REMOTE_ADDR``, IPv4-mapped IPv6 unwrapped); ``None`` if it is
    missing or not an address (a unix socket's peer, say)."""
    try:
        address = ipaddress.ip_address(environ.get("REMOTE_ADDR") or "")
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def allowed(environ: WSGIEnvironment, networks: Iterable[Network]) -> bool:
    """May this request read the metrics?"""
    address = client_address(environ)
    if address is None:
        return False
    if address.is_loopback and any(environ.get(h) for h in FORWARDING_HEADERS):
        return False
    return any(address in network for network in networks)
