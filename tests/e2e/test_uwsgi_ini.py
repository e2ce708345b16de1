"""uwsgi.ini on its own (DESIGN section 10): options appended on the command line win, it binds
no socket it was not asked for, and it stops on SIGTERM."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .client import fetch
from .servers import Tools, Uwsgi, free_port
from .stack import TENANTS

pytestmark = pytest.mark.e2e


def test_command_line_options_win(tools: Tools, tmp_path: Path) -> None:
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(TENANTS)
    port = free_port()
    options = ["--http-socket", f"127.0.0.1:{port}", "--virtualenv", sys.prefix]
    server = Uwsgi.start(tmp_path / "uwsgi", tenants_file, processes=1, threads=2, options=options)
    try:
        stats = server.stats()
        assert len(stats["workers"]) == 1
        # Only the socket asked for: no DISPATCHER_SOCKET, so no uwsgi socket.
        assert [s["name"] for s in stats["sockets"]] == [f"127.0.0.1:{port}"]
        reply = fetch(port, "/acme/", host=f"app.example.com:{port}")
        assert reply.status == 200
        assert reply.json()["external"] == f"http://app.example.com:{port}/acme/"
    finally:
        returncode = server.stop()
    assert returncode == 0
    assert "goodbye to uWSGI" in server.log_text()
