"""Hostile ``Host`` headers through the dispatcher's WSGI callable (DESIGN 5, 9, 10).

A malformed host, a bad port above all, gets 400 from the dispatcher: never a tenant, never a
500. werkzeug's ``get_host`` drops a ``:80`` suffix before it validates, so ``name:80:80``
used to pass as ``name:80`` and be served.
"""

from __future__ import annotations

import pytest
from werkzeug.test import Client

#: (Host header, what the dispatcher answers: a tenant's name, or a status code).
HOSTS = [
    # well-formed: the tenant, whatever the case, port or trailing dot
    ("umbrella.localhost", "umbrella"),
    ("umbrella.localhost:80", "umbrella"),
    ("umbrella.localhost:443", "umbrella"),
    ("umbrella.localhost:1", "umbrella"),
    ("umbrella.localhost:65535", "umbrella"),
    ("UMBRELLA.localhost.:8080", "umbrella"),
    ("unknown.localhost:8080", 404),
    ("[::1]:8080", 404),
    # a malformed port
    ("umbrella.localhost:80:80", 400),
    ("umbrella.localhost:8080:80", 400),
    ("umbrella.localhost:", 400),
    ("umbrella.localhost::80", 400),
    ("umbrella.localhost:0", 400),
    ("umbrella.localhost:65536", 400),
    ("umbrella.localhost:99999999999999999999", 400),
    ("umbrella.localhost:8o", 400),
    ("umbrella.localhost:+80", 400),
    ("umbrella.localhost:-80", 400),
    ("umbrella.localhost: 80", 400),
    ("umbrella.localhost:80 ", 400),
    ("umbrella.localhost:\u0663", 400),  # an Arabic-Indic digit: int() would take it
    ("umbrella.localhost:0x50", 400),
    ("[::1]:80:80", 400),
    ("[::1]:", 400),
    ("[::1]x", 400),
    ("[::1", 400),
    ("::1", 400),
    # other malformed hosts
    ("umbrella.localhost/acme", 400),
    ("umbrella.localhost@evil.com", 400),
    ("user:pw@umbrella.localhost", 400),
    ("umbrella .localhost", 400),
    ("umbrella.localhost\t", 400),
    ("", 400),
]


@pytest.mark.parametrize("host, expected", HOSTS, ids=[repr(h) for h, _ in HOSTS])
def test_host_header(echo_client: Client, host: str, expected: str | int) -> None:
    response = echo_client.get("/", headers={"Host": host})
    if isinstance(expected, str):
        assert (response.status_code, response.json["tenant"]) == (200, expected)  # type: ignore[index]
    else:
        assert response.status_code == expected
        body = response.get_data(as_text=True)
        assert "umbrella" not in body and "acme" not in body
