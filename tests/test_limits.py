"""``limits: {concurrent: N}``: at most N requests of a tenant in flight per worker, counted
exactly until each response is closed; the next one gets 503 with Retry-After at once
(DESIGN section 11)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask, Response
from werkzeug.test import Client

from dispatcher import ConfigError, TenantApp, TenantConfig, build, load_tenants
from dispatcher.limits import RETRY_AFTER, concurrency_limit
from dispatcher.metrics import Metrics

from .e2e.servers import wait_for


class Probe:
    """A Flask app that counts the requests inside it and can hold them at a gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.inside = 0
        self.most_inside = 0
        self.lock = threading.Lock()
        self.app = Flask(__name__)
        self.app.config["PROPAGATE_EXCEPTIONS"] = True
        self.app.add_url_rule("/wait", view_func=self.wait)
        self.app.add_url_rule("/fast", view_func=self.fast)
        self.app.add_url_rule("/raise", view_func=self.fail)
        self.app.add_url_rule("/stream", view_func=self.stream)

    def enter(self) -> None:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1

    def wait(self) -> str:
        self.enter()
        try:
            assert self.gate.wait(10)
            return "waited"
        finally:
            self.leave()

    def fast(self) -> str:
        self.enter()
        self.leave()
        return "fast"

    def fail(self) -> str:
        raise RuntimeError("this view fails")

    def stream(self) -> Response:
        def chunks() -> Iterator[str]:
            yield "one "
            yield "two"

        return Response(chunks())


def handle(probe: Probe, limit: int | None, metrics: Metrics | None = None) -> TenantApp:
    tenant = TenantConfig("acme", "tests.apps.echo", "/nonexistent", "sqlite://", "/acme")
    tenant = TenantConfig(**{**_fields(tenant), "max_concurrent": limit})
    return TenantApp(tenant, lambda t: probe.app, metrics)


def _fields(tenant: TenantConfig) -> dict:
    return {name: getattr(tenant, name) for name in tenant.__dataclass_fields__}


def test_the_request_beyond_the_limit_gets_503_at_once() -> None:
    probe, metrics = Probe(), Metrics()
    acme = handle(probe, 2, metrics)
    client = Client(acme)
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(client.get, "/wait", buffered=True) for _ in range(2)]
        wait_for(lambda: probe.inside == 2, "two requests inside the app")
        refused = client.get("/wait", buffered=True)  # would block forever if admitted
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == str(RETRY_AFTER)
        assert acme.in_flight == 2
        probe.gate.set()
        assert [f.result().status_code for f in held] == [200, 200]
    assert acme.in_flight == 0
    assert client.get("/fast", buffered=True).status_code == 200
    body, _ = metrics.render({}, {"acme": "ready"})
    assert 'dispatcher_rejected_total{reason="concurrency",tenant="acme"} 1.0' in body.decode()
    assert 'dispatcher_requests_total{code="5xx",tenant="acme"} 1.0' in body.decode()
    assert 'dispatcher_requests_total{code="2xx",tenant="acme"} 3.0' in body.decode()


def test_a_response_counts_until_it_is_closed() -> None:
    probe = Probe()
    acme = handle(probe, 1)
    client = Client(acme)
    streaming = client.get("/stream")  # not buffered: the body is not read yet
    assert acme.in_flight == 1
    assert client.get("/fast", buffered=True).status_code == 503
    assert streaming.get_data() == b"one two"
    streaming.close()
    assert acme.in_flight == 0
    assert client.get("/fast", buffered=True).status_code == 200


def test_the_count_never_drifts_under_threads() -> None:
    """4 threads, 2,000 requests: fast, streamed, failing; never more than the limit inside,
    every request answered or refused, and nothing left in flight."""
    probe, metrics = Probe(), Metrics()
    acme = handle(probe, 3, metrics)
    client = Client(acme)
    paths = ["/fast", "/stream", "/raise", "/fast"] * 500

    def send(path: str) -> int | str:
        try:
            return client.get(path, buffered=True).status_code
        except RuntimeError:
            return "raised"

    with ThreadPoolExecutor(4) as pool:
        outcomes = Counter(pool.map(send, paths))
    assert acme.in_flight == 0
    assert probe.inside == 0
    assert probe.most_inside <= 3
    assert outcomes["raised"] + outcomes[503] >= 1  # some failed, maybe some refused
    assert sum(outcomes.values()) == 2000
    body, _ = metrics.render({}, {"acme": "ready"})
    text = body.decode()
    answered = outcomes[200] + outcomes[503] + outcomes["raised"]
    assert f'dispatcher_request_duration_seconds_count{{tenant="acme"}} {answered}.0' in text


def test_no_limit_lets_everything_in() -> None:
    probe = Probe()
    acme = handle(probe, None)
    client = Client(acme)
    with ThreadPoolExecutor(6) as pool:
        held = [pool.submit(client.get, "/wait", buffered=True) for _ in range(6)]
        wait_for(lambda: probe.inside == 6, "six requests inside the app")
        probe.gate.set()
        assert [f.result().status_code for f in held] == [200] * 6


@pytest.mark.parametrize(
    ("configured", "threads", "expected"),
    [
        (None, 4, 3),  # uwsgi.ini: 4 threads, one always left for other tenants
        (None, 2, 1),
        (None, 1, None),  # a single-threaded worker: threads - 1 would serve nothing
        (None, None, None),  # the dev server: a thread per request, no pool to exhaust
        (2, 4, 2),
        (8, 4, 8),  # the operator's choice wins, even above the threads
        (1, None, 1),
    ],
)
def test_default_limit_rule(configured: int | None, threads: int | None, expected) -> None:
    assert concurrency_limit(configured, threads) == expected


def test_limits_merge_from_defaults(write_tenants) -> None:
    tenant_set = load_tenants(
        write_tenants(
            """
            version: 1
            defaults: {app: tests.apps.echo, limits: {concurrent: 3}}
            tenants:
              acme: {path: /acme}
              globex: {path: /globex, limits: {concurrent: 5}}
            """
        )
    )
    assert tenant_set["acme"].max_concurrent == 3
    assert tenant_set["globex"].max_concurrent == 5


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (
            "{concurrent: 0}",
            "field 'limits.concurrent': value should be greater than or equal to 1",
        ),
        ("{concurrent: '2'}", "field 'limits.concurrent': must be a whole number"),
        ("{concurent: 2}", "unknown field 'concurent' (did you mean 'concurrent'?)"),
    ],
)
def test_bad_limits_are_located_errors(write_tenants, limits: str, message: str) -> None:
    path = write_tenants(
        f"""
        version: 1
        defaults: {{app: tests.apps.echo}}
        tenants:
          acme: {{path: /acme, limits: {limits}}}
        """
    )
    with pytest.raises(ConfigError) as error:
        load_tenants(path)
    assert f"{path}:5: tenant 'acme', " in str(error.value)
    assert message in str(error.value)


def test_a_slot_freed_within_the_grace_admits_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A response already sent but not yet closed (its thread waiting for the interpreter
    lock) must not get a back-to-back request refused: the request waits for the slot."""
    monkeypatch.setattr(build, "GRACE", 5.0)
    acme = handle(Probe(), 1)
    client = Client(acme)
    closing = client.get("/stream")  # answered, not closed yet
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.get, "/fast", buffered=True)
        closing.close()
        assert waiting.result().status_code == 200
    assert acme.in_flight == 0


def test_a_slot_that_stays_taken_is_refused_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(build, "GRACE", 0.05)
    acme = handle(Probe(), 1)
    client = Client(acme)
    held = client.get("/stream")
    assert client.get("/fast", buffered=True).status_code == 503
    held.close()
    assert acme.in_flight == 0
