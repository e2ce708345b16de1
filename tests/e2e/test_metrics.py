"""Per-tenant metrics and concurrency limits through real uWSGI (uwsgi.ini, 2 processes x 4
threads unless said otherwise) and the shipped nginx sites (DESIGN section 11).

Every figure is read from /_dispatcher/metrics, polled until it matches (each worker writes
its figures out once a second), never after a fixed sleep.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pty
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.metrics import CODE_CLASSES, REASONS, STATES

from .client import Reply, fetch
from .servers import ROOT, Uwsgi, Worker, free_port, wait_for
from .stack import PATH_HOST, Stack

pytestmark = pytest.mark.e2e

TENANTS = """\
version: 1
server_names: [localhost]
instance_root: instance
defaults: {{app: tests.apps.echo}}
tenants:
  acme: {{path: /acme}}
  globex: {{path: /globex}}
  probe: {{path: /probe, app: tests.e2e.probe_app}}
  limited: {{path: /limited, app: tests.e2e.probe_app, limits: {{concurrent: 2}}}}
  sleepy: {{path: /sleepy, lazy: true}}
{extra}"""
TENANT_NAMES = {"acme", "globex", "probe", "limited", "sleepy"}


class Node:
    """uwsgi.ini on an HTTP port of its own, for one test."""

    def __init__(self, folder: Path, processes: int = 2, threads: int = 4, extra: str = ""):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        (folder / "tenants.yaml").write_text(TENANTS.format(extra=extra))
        self.port = free_port()
        self.uwsgi = Uwsgi.start(
            folder / "uwsgi",
            folder / "tenants.yaml",
            processes=processes,
            threads=threads,
            options=["--http-socket", f"127.0.0.1:{self.port}"],
        )

    def get(self, target: str, host: str = "localhost", **kwargs) -> Reply:
        return fetch(self.port, target, host=host, **kwargs)

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        reply = self.get("/_dispatcher/metrics")
        assert reply.status == 200, reply.text
        assert reply.headers["content-type"].startswith("text/plain")
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(reply.text)
            for s in family.samples
        }

    def requests(self) -> dict[tuple[str, str], float]:
        """``(tenant, code class) -> count`` as the node reports it."""
        return {
            (dict(labels)["tenant"], dict(labels)["code"]): v
            for (name, labels), v in self.scrape().items()
            if name == "dispatcher_requests_total"
        }

    def value(self, name: str, **labels: str) -> float:
        return self.scrape().get((name, frozenset(labels.items())), 0.0)

    def wait_until_counted(self, expected: dict[tuple[str, str], int]) -> None:
        last: list[dict] = [{}]

        def counted() -> bool:
            last[0] = self.requests()
            return last[0] == expected

        try:
            wait_for(counted, "the node's counts to match what was sent", timeout=20)
        except TimeoutError:
            raise AssertionError(f"expected {expected}, the node says {last[0]}") from None

    def stop(self) -> None:
        self.uwsgi.stop()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    server = Node(tmp_path / "node")
    yield server
    server.stop()


def send_all(node: Node, targets: list[str], clients: int = 8) -> Counter[tuple[str, str]]:
    """Send every request; what the clients got, as ``(tenant, code class) -> count``."""

    def send(target: str) -> tuple[str, str]:
        return target.split("/")[1], f"{node.get(target).status // 100}xx"

    with ThreadPoolExecutor(clients) as pool:
        return Counter(pool.map(send, targets))


def test_counts_per_tenant_are_exact_across_both_workers(
    node: Node, report_counts: Callable[..., None]
) -> None:
    targets = ["/acme/"] * 120 + ["/globex/"] * 60 + ["/acme/missing"] * 30
    targets += ["/probe/conn?sleep=0.05"] * 32 + ["/probe/status?code=302"] * 8
    answered = send_all(node, targets, clients=16)
    assert sum(answered.values()) == len(targets)
    # Beyond 3 in flight per tenant and worker (the default limit), some get 503: counted too.
    node.wait_until_counted(dict(answered))
    files = os.listdir(metrics_folder(node))
    writers = {name.rpartition("_")[2][:-3] for name in files if name.startswith("counter_")}
    report_counts(sent=len(targets), answered=dict(answered), files=sorted(files))
    assert len(writers) == 2, f"both workers should have counted: {files}"
    acme = answered[("acme", "2xx")] + answered[("acme", "4xx")] + answered[("acme", "5xx")]
    assert node.value("dispatcher_request_duration_seconds_count", tenant="acme") == acme
    # Each worker has every tenant in a state: the lazy one not built yet.
    assert node.value("dispatcher_tenant_state", tenant="acme", state="ready") == 2
    assert node.value("dispatcher_tenant_state", tenant="sleepy", state="lazy") == 2


def metrics_folder(node: Node) -> Path:
    """The one server folder under instance/.metrics (master pid - start time)."""
    (folder,) = (node.folder / "instance" / ".metrics").iterdir()
    return folder


def test_counts_survive_a_worker_killed_and_respawned(
    node: Node, report_counts: Callable[..., None]
) -> None:
    sent = send_all(node, ["/acme/"] * 50 + ["/globex/"] * 20)
    node.wait_until_counted(dict(sent))
    victim = node.uwsgi.workers()[0]
    os.kill(victim.pid, signal.SIGKILL)

    def respawned() -> Worker | None:
        workers = node.uwsgi.ready_workers() or []
        new = [w for w in workers if w.id == victim.id and w.pid != victim.pid]
        return new[0] if new and len(workers) == 2 else None

    replacement = wait_for(respawned, f"the master to respawn worker {victim.id}")
    sent += send_all(node, ["/acme/"] * 30)
    assert sent.total() == 100
    node.wait_until_counted(dict(sent))
    # The dead worker's live gauges are gone: two workers have acme ready, not three.
    assert node.value("dispatcher_tenant_state", tenant="acme", state="ready") == 2
    files = os.listdir(metrics_folder(node))
    report_counts(killed=victim.pid, respawned=replacement.pid, files=sorted(files))
    assert not [f for f in files if f.endswith(f"_{victim.pid}.db")], files
    assert "counter_archive.db" in files


def test_counts_survive_a_chain_reload_and_restart_from_zero(tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    try:
        sent = send_all(node, ["/acme/"] * 40)
        node.wait_until_counted(dict(sent))
        folder = metrics_folder(node)
        before = {w.pid for w in node.uwsgi.workers()}
        os.utime(node.uwsgi.reload_file)  # what `touch instance/.reload` does

        def reloaded() -> bool:
            workers = node.uwsgi.ready_workers() or []
            fresh = len(workers) == 2 and not before & {w.pid for w in workers}
            return fresh and "chain reloading complete" in node.uwsgi.log_text()

        wait_for(reloaded, "the chain reload to replace both workers", timeout=60)
        sent += send_all(node, ["/acme/"] * 10)
        node.wait_until_counted(dict(sent))
        assert metrics_folder(node) == folder  # the same server: the same folder
    finally:
        node.stop()
    # The same instance folder, a new server start: the old figures are gone.
    node.uwsgi = Uwsgi.start(
        node.folder / "uwsgi",
        node.folder / "tenants.yaml",
        options=["--http-socket", f"127.0.0.1:{node.port}"],
    )
    try:
        assert node.requests() == {}
        node.get("/acme/")
        node.wait_until_counted({("acme", "2xx"): 1})
        assert metrics_folder(node) != folder and not folder.exists()
    finally:
        node.stop()


HOSTILE = [
    ("GET", "/acme/%2e%2e/globex/", "localhost"),
    ("GET", "/acme/..%2fglobex/", "localhost"),
    ("GET", "/_dispatcher/metrics/../health", "localhost"),
    ("GET", "/nobody/", "localhost"),
    ("GET", "/", "evil.example.com"),
    ("GET", "/acme/", "a" * 300),
    ("GET", "/acme/", "bad host!"),
    ("GET", "/acme/", "[::1]:99999"),
    ("BREW", "/acme/", "localhost"),
    ("PROPFIND", "/globex/", "localhost"),
    ("OPTIONS", "*", "localhost"),
    ("GET", "/acme/%7F?code=999&tenant=evil", "localhost"),
    ("GET", "/probe/status?code=999", "localhost"),
    ("GET", "/probe/status?code=600", "localhost"),
    ("GET", "/probe/status?code=99", "localhost"),
]


def test_hostile_requests_create_no_series(node: Node) -> None:
    for method, target, host in HOSTILE:
        # uWSGI may drop a request, and http.client refuses status 99: nothing to read.
        with contextlib.suppress(OSError, http.client.HTTPException):
            node.get(target, host=host, method=method)
    node.get("/acme/")
    # Only requests that reach a tenant are observed: wait until all of those are counted.
    node.wait_until_counted(
        {("acme", "2xx"): 1, ("acme", "4xx"): 2, ("globex", "4xx"): 1, ("probe", "5xx"): 3}
    )
    allowed = {
        "tenant": TENANT_NAMES,
        "code": set(CODE_CLASSES),
        "state": set(STATES),
        "reason": set(REASONS),
        "result": {"ok", "failed"},
        "le": None,  # histogram buckets: fixed in code
    }
    for name, labels in node.scrape():
        assert name.startswith("dispatcher_"), name
        for label, value in labels:
            assert label in allowed, (name, label, value)
            assert allowed[label] is None or value in allowed[label], (name, label, value)


def test_the_endpoint_is_404_through_the_shipped_nginx(stack: Stack) -> None:
    """Through the site nginx-config generates (the shipped ones are its output)."""
    for host in (PATH_HOST, "umbrella.example.com"):
        for target in (
            "/_dispatcher/metrics",
            "/_dispatcher/metrics?format=text",
            "/_dispatcher//metrics",
            "//_dispatcher/metrics",
            "/_dispatcher/%6Detrics",
            "/_dispatcher/./metrics",
            "/acme/../_dispatcher/metrics",
        ):
            reply = stack.https(host, target)
            assert reply.status == 404, (host, target, reply.status)
            assert "dispatcher_" not in reply.text
        # The public health check still answers through nginx.
        assert stack.https(host, "/_dispatcher/health").status == 200


def test_a_tenant_limited_to_2_refuses_the_third_at_once(tmp_path: Path) -> None:
    node = Node(tmp_path / "node", processes=1, threads=4)
    release = tmp_path / "release"
    try:
        with ThreadPoolExecutor(2) as pool:
            held = [
                pool.submit(node.get, f"/limited/hang?until={release}", timeout=30)
                for _ in range(2)
            ]
            wait_for(
                lambda: node.value("dispatcher_requests_in_flight", tenant="limited") == 2,
                "two requests of 'limited' in flight",
            )
            third = node.get(f"/limited/hang?until={release}", timeout=10)
            assert third.status == 503
            assert third.headers["retry-after"] == "1"
            # Its neighbours are not limited by it.
            assert node.get("/acme/").status == 200
            release.touch()
            assert [f.result().status for f in held] == [200, 200]
        node.wait_until_counted({("limited", "2xx"): 2, ("limited", "5xx"): 1, ("acme", "2xx"): 1})
        assert node.value("dispatcher_rejected_total", tenant="limited", reason="concurrency") == 1
    finally:
        node.stop()


def latencies(node: Node, target: str, count: int) -> tuple[list[float], Counter[int]]:
    """Send ``count`` requests one after the other: their times and statuses (and, in the
    statuses, the first line of any answer that is not 200, to say what it was)."""
    seconds, statuses = [], Counter()
    for _ in range(count):
        started = time.perf_counter()
        reply = node.get(target, timeout=10)
        seconds.append(time.perf_counter() - started)
        statuses[reply.status] += 1
        if reply.status != 200:
            statuses[f"{reply.status}: {reply.text.strip().splitlines()[-1][:200]}"] += 1
    return seconds, statuses


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_hanging_neighbour_leaves_other_tenants_answering(
    node: Node, report_counts: Callable[..., None]
) -> None:
    """Defaults (threads - 1 = 3 per worker): requests to one tenant that hang leave every
    worker a thread, and every request of another tenant is answered meanwhile.

    8 hanging requests first, then more until both workers hold the 3 they admit (uWSGI may
    hand most of the 8 to one worker): the worst case, and the same one on every run.
    """
    release = node.folder / "release"
    alone, alone_statuses = latencies(node, "/acme/", 200)
    assert alone_statuses == {200: 200}
    with ThreadPoolExecutor(40) as pool:
        hanging: list = []

        def hang() -> None:
            hanging.append(pool.submit(node.get, f"/probe/hang?until={release}", timeout=30))

        def placed() -> float | None:
            in_flight = node.value("dispatcher_requests_in_flight", tenant="probe")
            refused = sum(1 for f in hanging if f.done() and f.result().status == 503)
            return in_flight if in_flight + refused == len(hanging) else None

        try:
            for _ in range(8):
                hang()
            in_flight = wait_for(placed, "the 8 hanging requests to be in flight or refused")
            while in_flight < 6 and len(hanging) < 40:
                hang()
                in_flight = wait_for(placed, "one more hanging request to be placed")
            beside, statuses = latencies(node, "/acme/", 200)
            still_hanging = sum(not f.done() for f in hanging)
        finally:
            release.touch()
        outcomes = Counter(f.result().status for f in hanging)
    report_counts(
        alone_p50_ms=round(statistics.median(alone) * 1000, 2),
        alone_p99_ms=round(percentile(alone, 0.99) * 1000, 2),
        beside_p50_ms=round(statistics.median(beside) * 1000, 2),
        beside_p99_ms=round(percentile(beside, 0.99) * 1000, 2),
        beside_max_ms=round(max(beside) * 1000, 2),
        neighbour_sent=len(hanging),
        neighbour_outcomes=dict(outcomes),
    )
    assert in_flight == 6  # 3 per worker: the limit, and never more
    assert statuses == {200: 200}, statuses
    assert still_hanging == 6  # the neighbour really hung throughout
    assert outcomes == {200: 6, 503: len(hanging) - 6}


def test_scrapes_do_not_stop_requests(tmp_path: Path, report_counts: Callable[..., None]) -> None:
    """200 busy tenants, a scrape every 0.1 s: every request is still answered. The figures
    (latency with and without the scraper, scrape time) go to the report, not to asserts."""
    extra = "".join(f"  t{i}: {{path: /t{i}}}\n" for i in range(200))
    node = Node(tmp_path / "node", extra=extra)
    try:
        send_all(node, [f"/t{i}/" for i in range(200)] * 2)  # a series for every tenant
        alone, alone_statuses = latencies(node, "/acme/", 300)
        stop = threading.Event()
        scrapes: list[tuple[int, float]] = []

        def scraper() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                status = node.get("/_dispatcher/metrics", timeout=30).status
                scrapes.append((status, time.perf_counter() - started))
                stop.wait(0.1)

        thread = threading.Thread(target=scraper)
        thread.start()
        try:
            wait_for(lambda: len(scrapes) >= 2, "the first scrapes")
            during, statuses = latencies(node, "/acme/", 300)
        finally:
            stop.set()
            thread.join()
        lines = node.get("/_dispatcher/metrics").text.count("\n")
    finally:
        node.stop()
    report_counts(
        series_lines=lines,
        scrapes=len(scrapes),
        scrape_p50_ms=round(statistics.median(s for _, s in scrapes) * 1000, 1),
        alone_p50_ms=round(statistics.median(alone) * 1000, 2),
        alone_p99_ms=round(percentile(alone, 0.99) * 1000, 2),
        scraped_p50_ms=round(statistics.median(during) * 1000, 2),
        scraped_p99_ms=round(percentile(during, 0.99) * 1000, 2),
    )
    assert alone_statuses == statuses == {200: 300}
    assert {status for status, _ in scrapes} == {200}


def test_top_once_prints_the_tenants_just_hit(node: Node) -> None:
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            node.get("/globex/")
            node.get("/acme/missing")

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        wait_for(lambda: node.requests().get(("globex", "2xx")), "globex's first requests counted")
        done = subprocess.run(
            [
                *(sys.executable, "-m", "dispatcher", "top", "--once", "--interval", "1.5"),
                *("--url", f"http://127.0.0.1:{node.port}"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "120"},
        )
    finally:
        stop.set()
        sender.join()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line.split()}
    assert {"globex", "acme", "sleepy"} <= rows.keys(), done.stdout
    # Busiest first: globex and acme got traffic during the interval, sleepy none.
    order = [name for name in rows if name in TENANT_NAMES]
    assert order.index("globex") < order.index("sleepy"), done.stdout
    assert float(rows["globex"][1]) > 0, done.stdout


def test_top_says_so_when_the_node_does_not_answer() -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "dispatcher", "top", "--once", "--url", f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert f"http://127.0.0.1:{port}/_dispatcher/metrics" in done.stderr
    assert "Traceback" not in done.stderr


def test_top_live_view_quits_on_q(node: Node) -> None:
    """The live view in a real terminal (a pty): it draws the tenants, and ``q`` ends it."""
    node.get("/acme/")
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "dispatcher", "top", "--interval", "0.3"),
            *("--url", f"http://127.0.0.1:{node.port}"),
        ],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=ROOT,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100", "LINES": "30"},
    )
    os.close(terminal)
    screen = bytearray()

    def shown(text: bytes) -> bool:
        while select.select([controller], [], [], 0.05)[0]:
            try:
                screen.extend(os.read(controller, 65536))
            except OSError:  # the process ended and closed the terminal
                break
        return text in screen

    try:
        wait_for(lambda: shown(b"sleepy") and shown(b"REQ/S"), "top to draw the tenants")
        os.write(controller, b"q")
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    assert b"acme" in screen and b"Traceback" not in screen
