"""dispatcher.metrics and dispatcher.metrics_files: what a scrape shows after the request path
observed some requests, and how the multiprocess folder is kept (DESIGN section 11)."""

from __future__ import annotations

import gc
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from dispatcher import Dispatcher, metrics_files, metrics_render, metrics_states, tenantapp
from dispatcher.metrics import (
    CODE_CLASSES,
    METRIC_NAMES,
    REQUEST_BUCKETS,
    STATES,
    Answered,
    Metrics,
    code_class,
)
from dispatcher.metrics_states import StateLog, read_state_logs

from .e2e.servers import wait_for

ROOT = Path(__file__).resolve().parent.parent


def samples(text: str | bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(metrics: Metrics, states=None) -> dict:
    body, content_type = metrics.render(states or {})
    assert content_type.startswith("text/plain")
    return samples(body)


def begin(metrics: Metrics, tenant: str) -> Answered:
    """A request that reached ``tenant`` and is still in flight, as the dispatcher records it
    (its ``ended`` set when it ends)."""
    request = Answered()
    request.tenant, request.started = tenant, 1.0
    metrics.record(request)
    return request


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "2xx"),
        (101, "1xx"),
        (599, "5xx"),
        ("404 NOT FOUND", "4xx"),
        ("302 FOUND", "3xx"),
        ("204", "2xx"),
        # Anything else is clamped, so no app can create a series:
        (999, "5xx"),
        (600, "5xx"),
        (99, "5xx"),
        (-200, "5xx"),
        ("999 UNKNOWN", "5xx"),
        ("2000 OK", "5xx"),
        ("abc", "5xx"),
        ("", "5xx"),
        ("²00 OK", "5xx"),  # a digit to str.isdigit, not to int()
        ("20", "5xx"),
    ],
)
def test_code_class_comes_from_a_fixed_set(status: int | str, expected: str) -> None:
    assert code_class(status) == expected
    assert code_class(status) in CODE_CLASSES


def test_flush_adds_up_requests_per_tenant_and_class() -> None:
    metrics = Metrics()
    states = {"acme": "ready", "globex": "lazy"}
    for i in range(300):
        metrics.observe("acme", "200 OK" if i % 3 else 404, 0.001 * i)
    metrics.observe("globex", "503 SERVICE UNAVAILABLE", 0.2)
    metrics.observe("globex", "999 BROKEN", 0.2)
    found = scrape(metrics, states=states)
    assert value(found, "dispatcher_requests_total", tenant="acme", code="2xx") == 200
    assert value(found, "dispatcher_requests_total", tenant="acme", code="4xx") == 100
    assert value(found, "dispatcher_requests_total", tenant="globex", code="5xx") == 2
    assert value(found, "dispatcher_request_duration_seconds_count", tenant="acme") == 300
    # Nothing observed twice: a second scrape shows the same figures.
    assert scrape(metrics, states=states) == found


def test_histogram_written_in_bulk_equals_one_observe_per_request() -> None:
    durations = [0.0, 0.005, 0.0051, 0.01, 0.3, 1.0, 7.0, 29.0, 31.0, 1000.0] * 7
    metrics = Metrics()
    for seconds in durations:
        metrics.observe("acme", 200, seconds)
    found = scrape(metrics, states={"acme": "ready"})
    registry = CollectorRegistry()
    reference = Histogram(
        "dispatcher_request_duration_seconds",
        "reference",
        ["tenant"],
        buckets=REQUEST_BUCKETS,
        registry=registry,
    )
    for seconds in durations:
        reference.labels("acme").observe(seconds)
    expected = {
        k: v for k, v in samples(generate_latest(registry)).items() if not k[0].endswith("_created")
    }
    ours = {k: v for k, v in found.items() if k[0].startswith("dispatcher_request_duration")}
    assert ours.keys() == expected.keys()
    for key, figure in expected.items():
        assert ours[key] == pytest.approx(figure), key


def test_only_tenants_of_the_file_and_fixed_values_become_labels() -> None:
    metrics = Metrics()
    metrics.observe("acme", 200, 0.01)
    metrics.observe("not-a-tenant", 200, 0.01)  # never named by the tenants file
    metrics.rejected("acme", "concurrency")
    metrics.rejected("acme", "made-up reason")
    found = scrape(metrics, states={"acme": "ready", "globex": "no-such-state"})
    assert metrics.dropped == 2
    for (name, labels), _ in found.items():
        labels = dict(labels)
        assert labels.get("tenant", "acme") in ("acme", "globex"), (name, labels)
        assert labels.get("code", "2xx") in CODE_CLASSES
        assert labels.get("state", "ready") in STATES
        assert labels.get("reason", "concurrency") == "concurrency"
    assert value(found, "dispatcher_rejected_total", tenant="acme", reason="concurrency") == 1
    assert not any(dict(labels).get("tenant") == "globex" for _, labels in found)


def test_gauges_follow_in_flight_and_state() -> None:
    """In flight: the recorded requests not ended yet; they count as answered once ended."""
    metrics = Metrics()
    running = [begin(metrics, "acme") for _ in range(3)]
    found = scrape(metrics, {"acme": "lazy", "globex": "ready"})
    assert value(found, "dispatcher_requests_in_flight", tenant="acme") == 3
    assert value(found, "dispatcher_tenant_state", tenant="acme", state="lazy") == 1
    assert value(found, "dispatcher_request_duration_seconds_count", tenant="acme") is None
    for request in running:
        request.status, request.ended = "200 OK", request.started + 0.002
    found = scrape(metrics, {"acme": "failed", "globex": "ready"})
    assert value(found, "dispatcher_requests_in_flight", tenant="acme") == 0
    assert value(found, "dispatcher_requests_total", tenant="acme", code="2xx") == 3
    assert value(found, "dispatcher_tenant_state", tenant="acme", state="lazy") == 0
    assert value(found, "dispatcher_tenant_state", tenant="acme", state="failed") == 1
    # A reload removed globex: it is in no state on this worker any more.
    found = scrape(metrics, {"acme": "failed"})
    assert value(found, "dispatcher_tenant_state", tenant="globex", state="ready") == 0


def test_only_the_changed_states_are_compared_within_one_view() -> None:
    """``changed`` names what moved in the view last compared whole; a flush with another
    view (another routing table's, after a reload) compares everything again."""
    metrics = Metrics()
    view = {"acme": "lazy", "globex": "ready"}
    scrape(metrics, states=view)
    view["acme"] = "ready"  # the table updates its view in place, and says what moved
    found = samples(metrics.render(view, {"acme"})[0])
    assert value(found, "dispatcher_tenant_state", tenant="acme", state="lazy") == 0
    assert value(found, "dispatcher_tenant_state", tenant="acme", state="ready") == 1
    other = {"acme": "ready"}  # a reload's table: globex is gone, though nothing "moved"
    found = samples(metrics.render(other, set())[0])
    assert value(found, "dispatcher_tenant_state", tenant="globex", state="ready") == 0
    assert value(found, "dispatcher_tenant_state", tenant="acme", state="ready") == 1


def test_a_request_in_flight_waits_for_a_table_that_names_its_tenant() -> None:
    """A flush whose view does not name a tenant yet (a scrape still on the table before the
    reload that added it) keeps that tenant's requests in flight for the next flush; only
    ended requests of a tenant no view ever named are dropped."""
    metrics = Metrics()
    scrape(metrics, {"acme": "ready"})
    running = begin(metrics, "initech")
    metrics.observe("nobody", 200, 0.01)
    found = scrape(metrics, {"acme": "ready"})  # the old table's view
    assert value(found, "dispatcher_requests_in_flight", tenant="initech") is None
    assert metrics.dropped == 1  # nobody's
    running.status, running.ended = "200 OK", running.started + 0.01
    found = scrape(metrics, {"acme": "ready", "initech": "ready"})  # the reload's table
    assert value(found, "dispatcher_requests_total", tenant="initech", code="2xx") == 1
    assert metrics.dropped == 1


def test_the_last_requests_of_a_tenant_a_reload_removed_still_count() -> None:
    """A request that was running when a reload removed its tenant is counted once it ends,
    as is one a scrape on the table from before the reload flushes."""
    metrics = Metrics()
    running = begin(metrics, "globex")
    scrape(metrics, {"acme": "ready", "globex": "ready"})
    scrape(metrics, {"acme": "ready"})  # the reload's table: globex is gone
    running.status, running.ended = "200 OK", running.started + 0.01
    metrics.observe("globex", 503, 0.01)
    found = scrape(metrics, {"acme": "ready"})
    assert value(found, "dispatcher_requests_total", tenant="globex", code="2xx") == 1
    assert value(found, "dispatcher_requests_total", tenant="globex", code="5xx") == 1
    assert metrics.dropped == 0


def test_builds_and_reloads_are_counted() -> None:
    metrics = Metrics()
    metrics.build("acme", True, 0.2)
    metrics.build("acme", False, 0.1)
    metrics.reload(True, 0.05)
    metrics.reload(False, 0.01)
    found = scrape(metrics, states={"acme": "failed"})
    assert value(found, "dispatcher_builds_total", tenant="acme", result="ok") == 1
    assert value(found, "dispatcher_builds_total", tenant="acme", result="failed") == 1
    assert value(found, "dispatcher_build_duration_seconds_count", tenant="acme") == 2
    assert value(found, "dispatcher_reloads_total", result="ok") == 1
    assert value(found, "dispatcher_reloads_total", result="failed") == 1
    assert value(found, "dispatcher_reload_duration_seconds_count") == 1


def test_every_metric_of_design_section_11_is_shown() -> None:
    metrics = Metrics()
    metrics.observe("acme", 200, 0.01)
    metrics.rejected("acme", "concurrency")
    metrics.build("acme", True, 0.1)
    metrics.reload(True, 0.1)
    begin(metrics, "acme")
    body, _ = metrics.render({"acme": "ready"})
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    shown = {n + "_total" if n + "_total" in METRIC_NAMES else n for n in names}
    assert shown == set(METRIC_NAMES)


def test_no_count_is_lost_while_threads_observe_and_flush() -> None:
    metrics = Metrics()
    states = {"acme": "ready"}
    stop = threading.Event()

    def flush_all_the_time() -> None:
        while not stop.is_set():
            metrics.flush(states)

    def send() -> None:
        for _ in range(5000):
            metrics.observe("acme", 200, 0.001)

    flusher = threading.Thread(target=flush_all_the_time)
    flusher.start()
    senders = [threading.Thread(target=send) for _ in range(4)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    stop.set()
    flusher.join()
    found = scrape(metrics, states=states)
    assert value(found, "dispatcher_requests_total", tenant="acme", code="2xx") == 20000


# -- The multiprocess folder -------------------------------------------------------------------

WORKER = """
import os, sys
from dispatcher.metrics import Answered, Metrics
metrics = Metrics(os.environ["PROMETHEUS_MULTIPROC_DIR"])
for _ in range(int(sys.argv[1])):
    metrics.observe("acme", 200, 0.01)
metrics.rejected("acme", "concurrency")
for _ in range(2):  # two requests in flight
    request = Answered()
    request.tenant, request.started = "acme", 1.0
    metrics.record(request)
metrics.flush({"acme": "ready"})
print(os.getpid())
"""


def run_worker(folder: Path, requests: int) -> int:
    """A process that writes its figures to ``folder`` as a uWSGI worker does, then exits."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WORKER), str(requests)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def folder_scrape(folder: Path) -> dict:
    return samples(metrics_render.render_folder(str(folder)))


def test_dead_workers_gauges_go_and_their_counts_stay(tmp_path: Path) -> None:
    first, second, third = (
        run_worker(tmp_path, 10),
        run_worker(tmp_path, 5),
        run_worker(tmp_path, 1),
    )
    found = folder_scrape(tmp_path)
    assert value(found, "dispatcher_requests_total", tenant="acme", code="2xx") == 16
    assert value(found, "dispatcher_requests_in_flight", tenant="acme") == 6
    assert value(found, "dispatcher_tenant_state", tenant="acme", state="ready") == 3

    (tmp_path / f"states_{first}.log.partial").write_text("acme ready 1\n")  # killed mid-rewrite
    assert metrics_files.tidy(str(tmp_path), frozenset({third})) == sorted([first, second])
    assert not (tmp_path / f"states_{first}.log.partial").exists()
    found = folder_scrape(tmp_path)
    assert value(found, "dispatcher_requests_total", tenant="acme", code="2xx") == 16
    assert value(found, "dispatcher_rejected_total", tenant="acme", reason="concurrency") == 3
    assert value(found, "dispatcher_request_duration_seconds_count", tenant="acme") == 16
    assert value(found, "dispatcher_requests_in_flight", tenant="acme") == 2
    assert value(found, "dispatcher_tenant_state", tenant="acme", state="ready") == 1

    # The last one dies too: merged into the existing archive, nothing counted twice.
    assert metrics_files.tidy(str(tmp_path), frozenset()) == [third]
    found = folder_scrape(tmp_path)
    assert value(found, "dispatcher_requests_total", tenant="acme", code="2xx") == 16
    assert (
        value(found, "dispatcher_request_duration_seconds_bucket", tenant="acme", le="0.01") == 16
    )
    assert value(found, "dispatcher_requests_in_flight", tenant="acme") is None
    files = metrics_files.worker_files(str(tmp_path))
    assert files == ["counter_archive.db", "histogram_archive.db"]
    assert not list(tmp_path.glob("states_*"))  # no dead worker's states are shown
    assert metrics_files.tidy(str(tmp_path), frozenset()) == []


def test_state_logs_add_up_each_workers_last_values(tmp_path: Path) -> None:
    """A worker's log of tenant states is replayed to the last value of each series, the
    workers are added up, a series once written stays (at 0), and a line still being
    appended is not read."""
    (tmp_path / "states_999999.log").write_text(
        "acme lazy 1\nacme lazy 0\nacme ready 1\nglobex lazy 1\nnot a line\nglobex rea"
    )
    StateLog(str(tmp_path)).write([], {"acme": "ready", "globex": "failed"})
    assert read_state_logs(str(tmp_path)) == {
        ("acme", "lazy"): 0,
        ("acme", "ready"): 2,
        ("globex", "lazy"): 1,
        ("globex", "failed"): 1,
    }


def test_a_state_log_is_rewritten_when_it_grows_and_a_forked_worker_starts_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_states, "_SLACK", 10)
    log = StateLog(str(tmp_path))
    log.write([], {"acme": "lazy", "globex": "lazy"})
    for i in range(100):  # acme built and evicted again and again
        state = "ready" if i % 2 == 0 else "lazy"
        log.write([("acme", "lazy" if state == "ready" else "ready", 0), ("acme", state, 1)], {})
    own = tmp_path / f"states_{os.getpid()}.log"
    assert len(own.read_text().splitlines()) <= 2 * 3 + 10  # three series, and the slack
    expected = {("acme", "lazy"): 1, ("acme", "ready"): 0, ("globex", "lazy"): 1}
    assert read_state_logs(str(tmp_path)) == expected
    child = os.fork()  # a worker forked after a flush: its first write is all it has
    if child == 0:
        log.write([], {"acme": "ready", "globex": "lazy"})
        os._exit(0)
    assert os.waitpid(child, 0)[1] == 0
    assert (tmp_path / f"states_{child}.log").read_text() == "acme ready 1\nglobex lazy 1\n"


@pytest.mark.parametrize("multiprocess", [False, True], ids=["memory", "folder"])
def test_every_tenants_state_costs_no_object_per_tenant(tmp_path: Path, multiprocess: bool) -> None:
    """A series per tenant (100,000 on a large node) as prometheus-client's children took
    three garbage-collected objects each, walked by every full collection."""
    metrics = Metrics(str(tmp_path) if multiprocess else None)
    states = {f"t{i}": "lazy" for i in range(10_000)}
    gc.collect()
    before = len(gc.get_objects())
    metrics.flush(states)
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    if multiprocess:
        assert read_state_logs(str(tmp_path))["t9999", "lazy"] == 1
    else:
        found = scrape(metrics, states)
        assert value(found, "dispatcher_tenant_state", tenant="t9999", state="lazy") == 1


def _disk_full(monkeypatch: pytest.MonkeyPatch, suffix: str, mode: str) -> None:
    """Opening a state log file ending in ``suffix`` in ``mode`` fails, as on a full disk."""
    real = open

    def failing(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith(suffix) and args[:1] == (mode,):
            raise OSError(28, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(metrics_states, "open", failing, raising=False)


@pytest.mark.parametrize("failed", ["first", "append"])
def test_states_a_failed_write_did_not_write_are_written_by_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failed: str
) -> None:
    """A worker whose first, whole write of its states failed, or an append of a change,
    writes them all with its next flush: no tenant is left out for the worker's life."""
    metrics = Metrics(str(tmp_path))
    states = {f"t{i}": "lazy" for i in range(5)}
    if failed == "append":
        metrics.flush(states)
        states["t0"] = "ready"
    with monkeypatch.context() as patched:
        _disk_full(
            patched, ".partial" if failed == "first" else ".log", "w" if failed == "first" else "a"
        )
        with pytest.raises(OSError):
            metrics.flush(states)
    metrics.flush(states)
    found = read_state_logs(str(tmp_path))
    assert {tenant for (tenant, _), n in found.items() if n} == set(states)
    assert all(found[tenant, state] == 1 for tenant, state in states.items())


def test_a_scrape_in_one_process_reads_the_states_while_a_flush_adds_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dev server: a scrape reads the states while the background thread's flush adds a
    series (a tenant's first "ready")."""
    from prometheus_client.core import GaugeMetricFamily

    metrics = Metrics()
    metrics.flush({"acme": "lazy", "globex": "lazy"})
    add_metric = GaugeMetricFamily.add_metric

    def a_flush_meanwhile(self: Any, *args: Any, **kwargs: Any) -> None:
        metrics.flush({"acme": "ready", "globex": "lazy"})
        add_metric(self, *args, **kwargs)

    monkeypatch.setattr(GaugeMetricFamily, "add_metric", a_flush_meanwhile)
    (family,) = metrics._states.collect()
    assert len(family.samples) == 2  # the two series there when it started


def test_a_worker_of_an_earlier_version_does_not_show_the_states_twice(tmp_path: Path) -> None:
    """During a chain reload from a version that kept the states in prometheus-client's
    gauge files, those are left out: the logs are the states."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    old = MmapedDict(str(tmp_path / "gauge_livesum_999999.db"))
    key = mmap_key(
        metrics_states.NAME,
        metrics_states.NAME,
        ["tenant", "state"],
        ["acme", "ready"],
        metrics_states.DOCUMENTATION,
    )
    old.write_value(key, 1.0, 0.0)
    old.close()
    StateLog(str(tmp_path)).write([], {"acme": "ready"})
    text = metrics_render.render_folder(str(tmp_path)).decode()
    assert text.count(f"# TYPE {metrics_states.NAME} gauge") == 1
    assert value(samples(text), metrics_states.NAME, tenant="acme", state="ready") == 1


def test_a_new_server_start_removes_only_gone_servers_folders(tmp_path: Path) -> None:
    master, started = 4242, 1000
    gone_pid = _exited_pid()
    keep = {
        f"{master}-{started}",  # this server
        f"{os.getpid()}-7",  # another server on the same folder, still running
        "notes",  # not a server's folder
    }
    remove = {f"{gone_pid}-5", f"{master}-999"}  # a gone server; this master's previous start
    for name in keep | remove:
        (tmp_path / name).mkdir()
    metrics_files._remove_old_servers(str(tmp_path), master, started)
    assert {p.name for p in tmp_path.iterdir()} == keep


def _exited_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_scrape_adds_up_the_files_in_a_child_process(tmp_path: Path) -> None:
    run_worker(tmp_path, 7)
    run_worker(tmp_path, 3)
    from_child = samples(metrics_render.render_in_child(str(tmp_path)))
    assert from_child == samples(metrics_render.render_folder(str(tmp_path)))
    assert value(from_child, "dispatcher_requests_total", tenant="acme", code="2xx") == 10


def test_the_child_runs_the_environment_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under uWSGI, sys.executable is the uwsgi program: the virtualenv's python3 runs."""
    monkeypatch.setattr(sys, "executable", str(ROOT / ".venv" / "bin" / "uwsgi"))
    assert metrics_render.python() == os.path.join(sys.exec_prefix, "bin", "python3")


GAUGE_TENANTS = """
    version: 1
    server_names: [localhost]
    defaults: {{app: "tests.apps.hostile:ordinary", lazy: true}}
    tenants:
{entries}
"""


@pytest.mark.parametrize("moves_kept", [4096, 1], ids=["followed", "fell-behind"])
def test_state_and_in_flight_gauges_follow_the_dispatcher(
    make_dispatcher: Callable[[str], Dispatcher],
    write_tenants: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    moves_kept: int,
) -> None:
    """Once a second the metrics write only what changed (tenants that had requests, states
    that moved), and still show exactly what the dispatcher has, through builds, holds, a
    reload that removes and adds tenants, and more changes than are remembered between two
    flushes ("fell-behind": they are all compared again)."""
    monkeypatch.setattr(tenantapp, "MOVES_KEPT", moves_kept)
    entries = "      acme: {path: /acme}\n      globex: {path: /globex}\n"
    dispatcher = make_dispatcher(GAUGE_TENANTS.format(entries=entries))
    client = Client(dispatcher)
    gone: set[str] = set()

    def check() -> dict:
        dispatcher.tick()
        found = samples(dispatcher.metrics.render(*dispatcher.routes.snapshot())[0])
        for name, handle in dispatcher.tenants.items():
            expected = "maintenance" if name in dispatcher.routes.held else handle.state
            for state in STATES:
                shown = value(found, "dispatcher_tenant_state", tenant=name, state=state)
                assert (shown or 0) == (1 if state == expected else 0), (name, state)
        for name in gone:
            for state in STATES:
                assert not value(found, "dispatcher_tenant_state", tenant=name, state=state)
        return found

    check()
    assert client.get("/acme/", headers={"Host": "localhost"}).status_code == 200
    check()  # acme: lazy -> ready
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(client.get, "/globex/wait/go", headers={"Host": "localhost"})
        globex = dispatcher.tenants["globex"]
        try:  # counted in flight from its start; its folder (and app) made by the build
            wait_for(lambda: globex.in_flight == 1 and globex.app is not None, "globex's app")
            found = check()
            assert value(found, "dispatcher_requests_in_flight", tenant="globex") == 1
        finally:  # (the request waits for this file)
            (tmp_path / "instance" / "globex" / "go").touch()
        assert held.result().status_code == 200
    found = check()
    assert value(found, "dispatcher_requests_in_flight", tenant="globex") == 0
    dispatcher.hold(frozenset({"acme"}))
    check()  # acme: in maintenance
    dispatcher.hold(frozenset())
    check()
    entries = "      acme: {path: /acme}\n      initech: {path: /initech}\n"
    write_tenants(GAUGE_TENANTS.format(entries=entries))
    gone.add("globex")
    check()  # globex removed, initech added (lazy)
    assert "initech" in dispatcher.tenants
    client.get("/initech/", headers={"Host": "localhost"})  # initech: lazy -> ready
    assert dispatcher.tenants["acme"].evict()  # acme: ready -> lazy; two moves in one second
    check()


def test_a_flush_with_nothing_changed_compares_no_tenant(
    make_dispatcher: Callable[[str], Dispatcher],
) -> None:
    """The once-a-second snapshot names only the tenants whose state moved since the last
    one (none, most seconds), not every tenant of the file."""
    entries = "".join(f"      t{i}: {{path: /t{i}}}\n" for i in range(200))
    dispatcher = make_dispatcher(GAUGE_TENANTS.format(entries=entries))
    assert dispatcher.routes.snapshot()[1] is None  # the first one: everything
    assert dispatcher.routes.snapshot()[1] == set()
    Client(dispatcher).get("/t7/", headers={"Host": "localhost"})
    states, changed = dispatcher.routes.snapshot()
    assert changed == {"t7"} and states["t7"] == "ready"
    assert dispatcher.routes.snapshot()[1] == set()


def test_state_gauges_stay_right_while_a_scrape_races_the_tick(
    make_dispatcher: Callable[[str], Dispatcher],
) -> None:
    """Each round a new table (a hold toggled), whose first view the tick makes whole while
    a scrape takes views of the same table and states keep moving; once it is quiet, one
    tick later, every tenant's state gauge says its state. Two races did leave a gauge wrong
    until that tenant moved again, in most runs of this test: a scrape's view landing in a
    dict the tick was about to replace, and a whole comparison remembering the view as it
    was after a scrape changed it, not as it wrote it. The thread switch is made frequent to
    find them."""
    entries = "".join(f"      t{i}: {{path: /t{i}}}\n" for i in range(2000))
    dispatcher = make_dispatcher(GAUGE_TENANTS.format(entries=entries))
    handles = list(dispatcher.tenants.values())
    racing = threading.Event()

    def scrape_all_the_time() -> None:
        while racing.is_set():  # (a scrape's flush: what its render starts with)
            dispatcher.metrics.flush(*dispatcher.routes.snapshot())

    def move_states(seed: int) -> None:  # builds and evictions, without waiting for real ones
        rng = random.Random(seed)
        while racing.is_set():
            handle = rng.choice(handles)
            with handle._lock:
                handle._set_state("ready" if handle.state == "lazy" else "lazy")
            time.sleep(0.0002)

    def wrong_gauges() -> list[str]:
        found = samples(dispatcher.metrics.render(*dispatcher.routes.snapshot())[0])
        shown = {
            dict(labels)["tenant"]: dict(labels)["state"]
            for (name, labels), v in found.items()
            if name == "dispatcher_tenant_state" and v == 1
        }
        held = dispatcher.routes.held
        return [
            name
            for name, handle in dispatcher.tenants.items()
            if shown.get(name) != ("maintenance" if name in held else handle.state)
        ]

    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.00005)
    try:
        for i in range(40):
            dispatcher.hold(frozenset({"t0"}) if i % 2 else frozenset())
            racing.set()
            threads = [
                threading.Thread(target=scrape_all_the_time),
                threading.Thread(target=move_states, args=(i,)),
            ]
            for thread in threads:
                thread.start()
            dispatcher.tick()  # the new table's first view: made whole
            time.sleep(0.01)
            racing.clear()
            for thread in threads:
                thread.join()
            dispatcher.tick()  # quiet now: the next second's tick
            assert wrong_gauges() == [], f"round {i}"
    finally:
        racing.clear()
        sys.setswitchinterval(switch)


def test_a_flush_that_fails_loses_no_state_and_no_request_in_flight(
    make_dispatcher: Callable[[str], Dispatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush that raises (a metrics file that cannot be written) after taking the states
    that moved: the next flush compares every state, and the requests it had found in
    flight are counted once they end."""
    dispatcher = make_dispatcher(GAUGE_TENANTS.format(entries="      acme: {path: /acme}\n"))
    metrics = dispatcher.metrics
    metrics.flush(*dispatcher.routes.snapshot())
    assert Client(dispatcher).get("/acme/", headers={"Host": "localhost"}).status_code == 200
    running = begin(metrics, "acme")
    writes = metrics._requests.labels

    def fail_once(*labels: str) -> object:
        monkeypatch.setattr(metrics._requests, "labels", writes)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics._requests, "labels", fail_once)
    with pytest.raises(OSError):
        metrics.flush(*dispatcher.routes.snapshot())
    running.status, running.ended = "200 OK", running.started + 0.01
    dispatcher.tick()
    found = samples(metrics.render(*dispatcher.routes.snapshot())[0])
    assert value(found, "dispatcher_tenant_state", tenant="acme", state="ready") == 1
    assert value(found, "dispatcher_tenant_state", tenant="acme", state="lazy") == 0
    # The request that ended before the failure is lost with the write that failed; the one
    # in flight then is not.
    assert value(found, "dispatcher_requests_total", tenant="acme", code="2xx") == 1
