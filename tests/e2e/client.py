"""A small HTTP(S) client for the end-to-end tests: any request target, any Host, TLS with SNI.

Browsers, curl and ``urllib`` normalise what these tests must send as it is (``..``, ``%2F``,
an odd or missing Host header), so requests are written with :mod:`http.client`, one
connection each, always to 127.0.0.1::

    reply = fetch(port, "/acme/../globex/", host="app.example.com:8443", tls=context)
    assert reply.status == 200 and reply.json()["tenant"] == "globex"
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode


@dataclass(frozen=True)
class Reply:
    """A whole response: status, headers (lower-cased names) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class _TLSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 that names the server of our choosing in the handshake (SNI)."""

    def __init__(self, port: int, server_name: str, context: ssl.SSLContext, timeout: float):
        super().__init__("127.0.0.1", port, context=context, timeout=timeout)
        self.server_name = server_name
        self.tls_context = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self.tls_context.wrap_socket(self.sock, server_hostname=self.server_name)


def fetch(
    port: int,
    target: str,
    *,
    host: str | None,
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    form: Mapping[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
    timeout: float = 10.0,
) -> Reply:
    """Send one request to ``127.0.0.1:port`` and read the whole reply.

    ``host=None`` sends no Host header at all. Over TLS the server name (SNI) defaults to the
    host without its port.
    """
    connection: http.client.HTTPConnection
    if tls is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        name = server_name or (host or "").rpartition(":")[0] or host or ""
        connection = _TLSConnection(port, name, tls, timeout)
    body = urlencode(form).encode() if form is not None else None
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            connection.putheader("Host", host)
        for name, value in headers:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Type", "application/x-www-form-urlencoded")
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Reply(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()
