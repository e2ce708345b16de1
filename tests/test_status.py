"""``python -m dispatcher status URL...`` (DESIGN section 13): one line per node, exit 1 when
the nodes serve different tenants files or one does not answer.

The nodes here are real dispatchers behind werkzeug's HTTP server, each in a thread on a
loopback port; the uwsgi protocol is tested against real uWSGI nodes in tests/e2e/test_fleet.py.
Nodes that misbehave (trickle their answer, send control characters) are raw socket servers.
"""

from __future__ import annotations

import hashlib
import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Response

from dispatcher import Dispatcher, load_tenants
from dispatcher.cli import main
from dispatcher.status import node_health

ROOT = Path(__file__).resolve().parent.parent
TENANTS = """
    version: 1
    server_names: [localhost]
    defaults: {app: tests.apps.echo, lazy: true}
    tenants:
      acme: {path: /acme}
      globex: {path: /globex}
"""
Serve = Callable[[object], str]
RawNode = Callable[[str, Sequence[bytes], float], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Serve a WSGI app on a free loopback port; its base URL. Stopped after the test."""
    servers: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(app: object) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)  # type: ignore[arg-type]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join()


@pytest.fixture
def node(serve: Serve, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """A dispatcher node serving this tenants file text (in its own folder); its URL. The
    dispatchers are closed after the test."""
    started: list[Dispatcher] = []

    def start(text: str) -> str:
        folder = tmp_path / f"node{len(started) + 1}"
        folder.mkdir()
        (folder / "tenants.yaml").write_text(text)
        started.append(Dispatcher(load_tenants(folder / "tenants.yaml")))
        return serve(started[-1])

    yield start
    for dispatcher in started:
        dispatcher.close()


@pytest.fixture
def raw_node() -> Iterator[RawNode]:
    """A fake node that ignores the request (HTTP or uwsgi alike) and writes these pieces of an
    answer, waiting this many seconds after each; its URL with this scheme. Stopped after the
    test, mid-answer if need be."""
    stop = threading.Event()
    servers: list[tuple[socketserver.TCPServer, threading.Thread]] = []

    def start(scheme: str, pieces: Sequence[bytes], pause: float) -> str:
        class Answer(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.recv(65536)  # the request; this node answers any the same
                try:
                    for piece in pieces:
                        self.request.sendall(piece)
                        if stop.wait(pause):
                            return
                except ConnectionError:  # status gave up on this node and closed its end
                    pass

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Answer)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"{scheme}://127.0.0.1:{server.server_address[1]}"

    yield start
    stop.set()
    for server, thread in servers:
        server.shutdown()
        server.server_close()  # joins the threads that answered
        thread.join()


def status(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["status", *args])
    return result.exit_code, result.output


def test_nodes_that_agree(node: Callable[[str], str], tmp_path: Path) -> None:
    urls = [node(TENANTS), node(TENANTS), node(TENANTS) + "/"]
    code, output = status(*urls)
    sha256 = hashlib.sha256((tmp_path / "node1" / "tenants.yaml").read_bytes()).hexdigest()
    width = max(map(len, urls))
    assert output.splitlines() == [
        f"{url.ljust(width)}  {sha256[:12]}  ready 0  lazy 2  failed 0  maintenance 0"
        for url in urls
    ] + [f"ok: 3 node(s) serve the same tenants file ({sha256[:12]})"]
    assert code == 0


def test_drift_is_reported_and_exits_1(node: Callable[[str], str], tmp_path: Path) -> None:
    old = node(TENANTS)
    new = [node(TENANTS + "      initech: {path: /initech}\n") for _ in range(2)]
    code, output = status(old, *new)
    assert code == 1
    old_sha = hashlib.sha256((tmp_path / "node1" / "tenants.yaml").read_bytes()).hexdigest()
    new_sha = hashlib.sha256((tmp_path / "node2" / "tenants.yaml").read_bytes()).hexdigest()
    assert f"{old}  {old_sha[:12]}  ready 0  lazy 2" in output
    assert f"{new[0]}  {new_sha[:12]}  ready 0  lazy 3" in output
    assert (
        f"Error: drift: the nodes serve 2 different tenants files ({new_sha[:12]} on 2 "
        f"node(s), {old_sha[:12]} on 1 node(s)); put the same file on every node"
    ) in output
    assert "acme" not in output and "initech" not in output  # health names no tenant


def test_a_node_that_is_down_or_silent_exits_1(node: Callable[[str], str]) -> None:
    up = node(TENANTS)
    with socket.socket() as refusing, socket.socket() as silent:
        refusing.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts (the kernel does) but never answers
        down = f"http://127.0.0.1:{refusing.getsockname()[1]}"
        hung = f"http://127.0.0.1:{silent.getsockname()[1]}"
        code, output = status("--timeout", "0.5", up, down, hung)
    assert code == 1
    lines = output.splitlines()
    assert lines[1] == f"{down}  -             error: connection refused"
    assert lines[2] == f"{hung}  -             error: no answer within 0.5 s"
    assert f"Error: 2 node(s) did not answer: {down}, {hung}" in output


def answering(status_code: int, body: object) -> object:
    return Response(json.dumps(body), status=status_code, mimetype="application/json")


@pytest.mark.parametrize(
    "status_code, body, error",
    [
        (503, {}, "its health answered 503, not 200"),
        (404, {}, "its health answered 404, not 200"),
        (200, {"hello": "world"}, "the answer is not a dispatcher's health (wrong address?)"),
        (200, "<html>", "the answer is not a dispatcher's health (wrong address?)"),
        (
            200,
            {"status": "ok", "tenants": {"ready": 1}},
            "its health has no tenants_file_sha256 (an older version?)",
        ),
    ],
)
def test_an_answer_that_is_no_health_is_an_error(
    serve: Serve, status_code: int, body: object, error: str
) -> None:
    url = serve(answering(status_code, body))
    assert node_health(url, timeout=5).error == error
    code, output = status(url)
    assert code == 1
    assert f"error: {error}" in output


HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize("scheme", ["http", "uwsgi"])
def test_timeout_bounds_a_trickling_answer(raw_node: RawNode, scheme: str) -> None:
    """--timeout is a deadline for a node's whole answer. A socket's timeout bounds each wait
    for a byte, so one space every half second for 30 s would never trip it."""
    trickle = [b" "] * 60
    in_headers = raw_node(scheme, [HEADERS + b"X-Slow:", *trickle], 0.5)
    in_body = raw_node(scheme, [HEADERS + b"\r\n", *trickle], 0.5)
    started = time.monotonic()
    code, output = status("--timeout", "2", in_headers, in_body)
    assert time.monotonic() - started < 10
    assert code == 1
    width = max(len(in_headers), len(in_body))
    assert output.splitlines() == [
        f"{in_headers.ljust(width)}  -             error: no answer within 2 s",
        f"{in_body.ljust(width)}  -             error: no answer within 2 s",
        f"Error: 2 node(s) did not answer: {in_headers}, {in_body}",
    ]


@pytest.mark.parametrize(
    "sha256",
    ["zz\n\u001b[31mx", "A" * 64, "0" * 63, "0" * 64 + "\n", "\u0660" * 64, 123],
    ids=["escape", "uppercase", "short", "newline", "arabic-digits", "number"],
)
def test_a_hash_that_is_no_sha256_is_no_health(serve: Serve, sha256: object) -> None:
    """Two nodes sending the same garbage do not agree: they are not dispatchers."""
    body = {"status": "ok", "tenants": {"ready": 1}, "tenants_file_sha256": sha256}
    urls = [serve(answering(200, body)) for _ in range(2)]
    code, output = status(*urls)
    assert code == 1
    assert output.splitlines() == [
        f"{url}  -             error: the answer is not a dispatcher's health (wrong address?)"
        for url in urls
    ] + [f"Error: 2 node(s) did not answer: {urls[0]}, {urls[1]}"]


@pytest.mark.parametrize("scheme", ["http", "uwsgi"])
def test_control_characters_from_a_node_are_escaped(raw_node: RawNode, scheme: str) -> None:
    """What a node sends reaches the operator's terminal only as visible text."""
    url = raw_node(scheme, [b"HTTP/1.1 2\x1b[31m00 OK\r\n\r\n"], 0)
    code, output = status(url)
    assert code == 1
    assert output.splitlines()[0] == f"{url}  -             error: HTTP/1.1 2\\x1b[31m00 OK"
    assert "\x1b" not in output


@pytest.mark.parametrize(
    "url",
    [
        "10.0.0.11:8000",
        "ftp://10.0.0.11",
        "http://",
        "uwsgi://10.0.0.11",
        "http://a:x",
        "unix:x",
        "http://[::1",
    ],
)
def test_a_url_that_is_no_node_address_exits_2(url: str) -> None:
    code, output = status(url)
    assert code == 2
    assert f"'{url}'" in output


def test_unresolvable_host(serve: Serve) -> None:
    health = node_health("http://no-such-host.invalid:8000", timeout=5)
    assert health.error is not None and health.error.startswith("cannot resolve its host name")


def test_status_as_a_real_subprocess(node: Callable[[str], str]) -> None:
    url = node(TENANTS)
    argv = [sys.executable, "-m", "dispatcher", "status", url]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(url)
    assert done.stdout.splitlines()[-1].startswith("ok: 1 node(s) serve the same tenants file")
