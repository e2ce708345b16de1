"""uwsgi.ini on its own (DESIGN section 10): options appended on the command line win, it binds
no socket it was not asked for, and it stops on SIGTERM."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .client import fetch
from .servers import ROOT, UWSGI, Process, Tools, Uwsgi, free_port, wait_for
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


def test_two_instances_on_one_machine_both_serve(tools: Tools, tmp_path: Path) -> None:
    """Blue/green, or two nodes on one box: the ini's defaults bind nothing both would want
    (stats are off unless DISPATCHER_STATS is set), so both start and serve."""
    servers: list[tuple[Process, int, str]] = []
    try:
        for colour in ("blue", "green"):
            folder = tmp_path / colour
            folder.mkdir()
            tenants_file = folder / "tenants.yaml"
            tenants_file.write_text(
                f"version: 1\nserver_names: [app.example.com]\n"
                f"tenants:\n  {colour}: {{path: /{colour}, app: tests.apps.echo}}\n"
            )
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("UWSGI_", "DISP"))}
            env.update(TENANTS_FILE=str(tenants_file), PYTHONPATH=str(ROOT))
            argv = [UWSGI, "--ini", ROOT / "uwsgi.ini", "--http-socket", f"127.0.0.1:{port}"]
            server = Process([*map(str, argv), "--processes", "2"], folder / "uwsgi.log", env)
            servers.append((server, port, colour))
        for server, port, colour in servers:
            wait_for(lambda s=server, p=port: _serves(s, p), f"{colour} to serve", timeout=30)
            reply = fetch(port, f"/{colour}/", host="app.example.com")
            assert (reply.status, reply.json()["tenant"]) == (200, colour)
        for server, _, _ in servers:  # both still up, neither stopped by the other
            server.check_running()
            assert "stats server enabled" not in server.log_text().lower()
    finally:
        for server, _, _ in servers:
            server.stop()


def _serves(server: Process, port: int) -> bool:
    server.check_running()  # a server that died at start fails the wait at once
    try:
        return fetch(port, "/_dispatcher/health", host="app.example.com").status == 200
    except OSError:  # not listening yet
        return False
