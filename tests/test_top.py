"""``python -m dispatcher top``'s arithmetic (dispatcher.metrics_read) and its command line.
The live view against real uWSGI is in tests/e2e/test_metrics.py.

The command's tests read from servers in threads on loopback ports: werkzeug's HTTP server
(serving fixed answers, or a real dispatcher) and a small one speaking the uwsgi protocol.
"""

from __future__ import annotations

import socketserver
import struct
import threading
from collections.abc import Callable, Iterable, Iterator

import pytest
from click.testing import CliRunner, Result
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from dispatcher import Dispatcher
from dispatcher.cli import main
from dispatcher.cli.top import default_url
from dispatcher.metrics import Answered, Metrics
from dispatcher.metrics_read import Scrape, Tenant, metrics_url, parse, quantile, rows

INF = float("inf")
TENANTS = """
    version: 1
    server_names: [localhost]
    defaults: {app: tests.apps.echo}
    tenants:
      acme: {path: /acme}
"""


def test_quantile_interpolates_within_the_bucket() -> None:
    buckets = {0.1: 50.0, 0.2: 90.0, 0.5: 100.0, INF: 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.7, buckets) == pytest.approx(0.15)
    assert quantile(0.99, buckets) == pytest.approx(0.47)
    assert quantile(0.25, buckets) == pytest.approx(0.05)


def test_quantile_in_the_last_bucket_is_the_highest_bound() -> None:
    assert quantile(0.99, {1.0: 1.0, 30.0: 1.0, INF: 10.0}) == 30.0


def test_quantile_without_requests_is_none() -> None:
    assert quantile(0.5, {}) is None
    assert quantile(0.5, {0.1: 0.0, INF: 0.0}) is None


def scrape(taken: float, **tenants: Tenant) -> Scrape:
    return Scrape(taken, tenants)


def test_rows_are_rates_over_the_interval_busiest_first() -> None:
    before = scrape(
        10.0,
        acme=Tenant(requests={"2xx": 100.0}, buckets={0.1: 100.0, INF: 100.0}),
        globex=Tenant(requests={"2xx": 5.0, "5xx": 0.0}, buckets={0.1: 5.0, INF: 5.0}),
    )
    after = scrape(
        12.0,
        acme=Tenant(
            requests={"2xx": 110.0},
            buckets={0.1: 110.0, INF: 110.0},
            states={"ready": 2.0},
        ),
        globex=Tenant(
            requests={"2xx": 25.0, "5xx": 20.0},
            buckets={0.1: 25.0, INF: 45.0},
            in_flight=3.0,
            states={"ready": 1.0, "failed": 1.0, "lazy": 0.0},
        ),
        sleepy=Tenant(states={"lazy": 2.0}),
    )
    globex, acme, sleepy = rows(before, after)
    assert (globex.tenant, globex.rate, globex.errors) == ("globex", 20.0, 0.5)
    assert globex.in_flight == 3 and globex.state == "failed/ready"
    assert globex.p99 == 0.1  # beyond the last finite bound
    assert (acme.tenant, acme.rate, acme.errors) == ("acme", 5.0, 0.0)
    assert acme.p50 == pytest.approx(0.05)
    assert (sleepy.tenant, sleepy.rate, sleepy.p50, sleepy.state) == ("sleepy", 0.0, None, "lazy")


def test_a_counter_that_went_down_was_reset() -> None:
    before = scrape(0.0, acme=Tenant(requests={"2xx": 1000.0}))
    after = scrape(1.0, acme=Tenant(requests={"2xx": 7.0}))
    assert rows(before, after)[0].rate == 7.0


def test_parse_reads_a_real_scrape() -> None:
    metrics = Metrics()
    for seconds in (0.001, 0.002, 0.3):
        metrics.observe("acme", 200, seconds)
    metrics.observe("acme", 503, 0.0)
    for _ in range(2):  # still in flight
        request = Answered()
        request.tenant, request.started = "acme", 1.0
        metrics.record(request)
    body, _ = metrics.render({"acme": "ready"})
    acme = parse(body.decode(), taken=0.0).tenants["acme"]
    assert acme.requests == {"2xx": 3.0, "5xx": 1.0}
    assert acme.buckets[0.005] == 3.0 and acme.buckets[INF] == 4.0
    assert acme.in_flight == 2.0
    assert acme.states == {"ready": 1.0}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/_dispatcher/metrics"),
        ("http://node-1:8000/", "http://node-1:8000/_dispatcher/metrics"),
        ("http://node-1:8000/_dispatcher/metrics", "http://node-1:8000/_dispatcher/metrics"),
        ("unix:/run/dispatcher/uwsgi.sock", "unix:/run/dispatcher/uwsgi.sock"),
    ],
)
def test_metrics_url(given: str, expected: str) -> None:
    assert metrics_url(given) == expected


def test_default_url_is_the_local_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPATCHER_SOCKET", raising=False)
    assert default_url() == "http://127.0.0.1:8000"
    monkeypatch.setenv("DISPATCHER_SOCKET", "/run/dispatcher/uwsgi.sock")
    assert default_url() == "unix:/run/dispatcher/uwsgi.sock"
    monkeypatch.setenv("DISPATCHER_SOCKET", "127.0.0.1:3031")
    assert default_url() == "uwsgi://127.0.0.1:3031"
    monkeypatch.setenv("DISPATCHER_SOCKET", ":3031")  # uWSGI: every interface, port 3031
    assert default_url() == "uwsgi://127.0.0.1:3031"


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com", "uwsgi://127.0.0.1", "unix:/nonexistent/uwsgi.sock", "http://[::1"],
)
def test_an_unusable_url_is_a_clear_error(url: str) -> None:
    result = CliRunner().invoke(main, ["top", "--once", "--url", url])
    assert result.exit_code == 1
    assert f"cannot read {url}" in result.output
    assert "Traceback" not in result.output


def real_scrape() -> bytes:
    """What a node with one tenant, acme, that answered two requests shows."""
    metrics = Metrics()
    metrics.observe("acme", 200, 0.002)
    metrics.observe("acme", 500, 0.3)
    request = Answered()  # one still in flight
    request.tenant, request.started = "acme", 1.0
    metrics.record(request)
    body, _ = metrics.render({"acme": "ready"})
    return body


def top(*args: str) -> Result:
    return CliRunner().invoke(main, ["top", "--interval", "0.1", *args])


Serve = Callable[[Callable[..., Iterable[bytes]]], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Serve a WSGI app over HTTP on a free loopback port; its base URL. Stopped after the test."""
    servers: list[BaseWSGIServer] = []

    def start(app: Callable[..., Iterable[bytes]]) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()


def answering(*bodies: str | bytes) -> Callable[..., Iterable[bytes]]:
    """A WSGI app that answers 200 with each body in turn, then 404 to every request."""
    left = list(bodies)

    @Request.application
    def app(request: Request) -> Response:
        if not left:
            return Response("gone", status=404)
        return Response(left.pop(0), content_type="text/plain; version=0.0.4")

    return app


def not_metrics(url: str, reason: str) -> str:
    return (
        f"Error: {url} did not answer with a dispatcher's metrics ({reason}). Check the URL: a "
        "node's http://HOST:PORT, unix:/path/to/uwsgi.sock or uwsgi://HOST:PORT, not a tenant's "
        "page or /_dispatcher/health"
    )


NOT_FORMAT = "the answer is not in Prometheus' text format"
#: Answers of 200 that are not a dispatcher's metrics, and why not.
NOT_METRICS = [
    pytest.param("hello world", NOT_FORMAT, id="text"),
    pytest.param(
        'dispatcher_requests_in_flight{tenant="a"} 1 1' + "0" * 400,
        NOT_FORMAT,
        id="timestamp-of-400-digits",
    ),
    pytest.param(
        "process_cpu_seconds_total 1.5",
        "the answer has no dispatcher_ figures",
        id="another-exporter",
    ),
    pytest.param(
        'dispatcher_requests_total{code="2xx"} 5',
        "a dispatcher_requests_total sample has no 'tenant' label",
        id="no-tenant",
    ),
    pytest.param(
        'dispatcher_requests_total{tenant="a"} 5',
        "a dispatcher_requests_total sample has no 'code' label",
        id="no-code",
    ),
    pytest.param(
        'dispatcher_request_duration_seconds_bucket{tenant="a",le="abc"} 5',
        "a dispatcher_request_duration_seconds_bucket sample's 'le' label is 'abc', not a number",
        id="le-abc",
    ),
    pytest.param(
        'dispatcher_request_duration_seconds_bucket{tenant="a"} 5',
        "a dispatcher_request_duration_seconds_bucket sample has no 'le' label",
        id="no-le",
    ),
    pytest.param(
        'dispatcher_tenant_state{tenant="a"} 1',
        "a dispatcher_tenant_state sample has no 'state' label",
        id="no-state",
    ),
    pytest.param(
        'dispatcher_requests_in_flight{tenant="a"} +Inf',
        "a dispatcher_requests_in_flight sample is inf, not a count",
        id="inf",
    ),
    pytest.param(
        'dispatcher_requests_in_flight{tenant="a"} NaN',
        "a dispatcher_requests_in_flight sample is nan, not a count",
        id="nan",
    ),
    pytest.param(
        'dispatcher_requests_total{tenant="a",code="2xx"} -1',
        "a dispatcher_requests_total sample is -1.0, not a count",
        id="negative",
    ),
    pytest.param(
        'dispatcher_requests_total{tenant="a",code="2xx"} ' + "9" * 400,
        "a dispatcher_requests_total sample is inf, not a count",
        id="count-of-400-digits",
    ),
]


def assert_clear_error(result: Result, message: str) -> None:
    assert result.output.splitlines()[-1] == message
    assert isinstance(result.exception, SystemExit)  # not an exception that escaped
    assert result.exit_code == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("body", "reason"), NOT_METRICS)
def test_an_answer_that_is_not_metrics_is_a_clear_error(
    serve: Serve, body: str, reason: str
) -> None:
    url = serve(answering(body, body))
    result = top("--once", "--url", url)
    assert_clear_error(result, not_metrics(f"{url}/_dispatcher/metrics", reason))


@pytest.mark.parametrize(("body", "reason"), NOT_METRICS)
def test_the_live_view_stops_with_the_same_error(serve: Serve, body: str, reason: str) -> None:
    url = serve(answering(real_scrape(), body))  # the first read is a node's, the next not
    result = top("--url", url)
    assert_clear_error(result, not_metrics(f"{url}/_dispatcher/metrics", reason))


@pytest.mark.parametrize("path", ["/acme/", "/_dispatcher/health"])
def test_a_tenant_page_or_the_health_of_a_real_node_is_not_metrics(
    serve: Serve, make_dispatcher: Callable[[str], Dispatcher], path: str
) -> None:
    # localhost: the tenants file's server name (any other host is unknown: 404)
    url = serve(make_dispatcher(TENANTS)).replace("127.0.0.1", "localhost") + path
    result = top("--once", "--url", url)
    assert_clear_error(result, not_metrics(url, NOT_FORMAT))


def test_label_values_are_shown_as_they_are(serve: Serve) -> None:
    """rich markup in a label ("[/x]" would end a style that was never started) is text."""
    body = 'dispatcher_tenant_state{tenant="[/x]",state="[b]ready"} 1'
    result = top("--once", "--url", serve(answering(body, body)))
    assert result.exit_code == 0, result.output
    assert "[/x]" in result.output and "[b]ready" in result.output


class UwsgiNode(socketserver.BaseRequestHandler):
    """Answers any request in the uwsgi protocol, as uWSGI does, with a node's metrics."""

    def handle(self) -> None:
        received = b""
        while len(received) < 4 or len(received) < 4 + struct.unpack("<H", received[1:3])[0]:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            received += chunk
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        self.request.sendall(real_scrape())


def test_a_socket_on_every_interface_is_read_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """uwsgi.ini's socket ":PORT" means every interface: top reads it at 127.0.0.1:PORT."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), UwsgiNode) as node:
        threading.Thread(target=node.serve_forever, args=(0.05,), daemon=True).start()
        port = node.server_address[1]
        monkeypatch.setenv("DISPATCHER_SOCKET", f":{port}")
        try:
            result = top("--once")
        finally:
            node.shutdown()
    assert result.exit_code == 0, result.output
    assert f"dispatcher top: uwsgi://127.0.0.1:{port}" in result.output
    assert "acme" in result.output
