"""``limits: {concurrent: N}``: at most N requests of a tenant in flight per worker, counted
exactly while its app handles them; the next one gets 503 with Retry-After at once (DESIGN
section 11)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from werkzeug.test import Client

from dispatcher import ConfigError, Dispatcher, load_tenants
from dispatcher.limits import RETRY_AFTER, concurrency_limit

from .e2e.servers import wait_for

HOST = {"Host": "localhost"}


def tenants(limits: str = "") -> str:
    return f"""
        version: 1
        server_names: [localhost]
        defaults: {{app: "tests.apps.hostile:ordinary"}}
        tenants:
          acme: {{path: /acme{limits}}}
          globex: {{path: /globex}}
    """


def get(client: Client, url: str) -> int:
    return client.get(url, headers=HOST, buffered=True).status_code


def scrape(dispatcher: Dispatcher) -> str:
    """What ``/_dispatcher/metrics`` would answer now."""
    body, _ = dispatcher.metrics.render(*dispatcher.routes.snapshot())
    return body.decode()


def test_the_request_beyond_the_limit_gets_503_at_once(
    make_dispatcher: Callable[[str], Dispatcher], tmp_path: Path
) -> None:
    dispatcher = make_dispatcher(tenants(", limits: {concurrent: 2}"))
    client = Client(dispatcher)
    acme = dispatcher.tenants["acme"]
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(get, client, "/acme/wait/go") for _ in range(2)]
        wait_for(lambda: acme.in_flight == 2, "two requests inside the app")
        refused = client.get("/acme/", headers=HOST, buffered=True)  # would be served if admitted
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == str(RETRY_AFTER)
        assert get(client, "/globex/") == 200  # another tenant is not limited by acme's
        (tmp_path / "instance" / "acme" / "go").touch()
        assert [f.result() for f in held] == [200, 200]
    assert acme.in_flight == 0
    assert get(client, "/acme/") == 200
    text = scrape(dispatcher)
    assert 'dispatcher_rejected_total{reason="concurrency",tenant="acme"} 1.0' in text
    assert 'dispatcher_requests_total{code="5xx",tenant="acme"} 1.0' in text
    assert 'dispatcher_requests_total{code="2xx",tenant="acme"} 3.0' in text


def test_the_count_never_drifts_under_threads(
    make_dispatcher: Callable[[str], Dispatcher],
) -> None:
    """4 threads, 2,000 requests (limit 3): answered, failing (500), refused (503); every
    request counted once, and nothing left in flight."""
    dispatcher = make_dispatcher(
        """
        version: 1
        server_names: [localhost]
        tenants: {acme: {path: /acme, app: tests.apps.echo, limits: {concurrent: 3}}}
        """
    )
    client = Client(dispatcher)
    paths = ["/acme/", "/acme/boom", "/acme/items", "/acme/"] * 500
    with ThreadPoolExecutor(4) as pool:
        outcomes = Counter(pool.map(lambda path: get(client, path), paths))
    assert dispatcher.tenants["acme"].in_flight == 0
    assert sum(outcomes.values()) == 2000 and outcomes[200] and outcomes[500]
    assert set(outcomes) <= {200, 500, 503}
    assert 'dispatcher_request_duration_seconds_count{tenant="acme"} 2000.0' in scrape(dispatcher)


def test_an_exception_out_of_the_app_counts_as_a_5xx(
    make_dispatcher: Callable[[str], Dispatcher],
) -> None:
    """An app that raises instead of answering never gives a status; the server answers 500,
    and the metrics count a 5xx with its duration, as for an app's own 500."""
    dispatcher = make_dispatcher(
        """
        version: 1
        server_names: [localhost]
        defaults: {app: tests.apps.echo}
        tenants:
          acme: {path: /acme, config: {PROPAGATE_EXCEPTIONS: true}}
          globex: {path: /globex}
        """
    )
    client = Client(dispatcher)
    with pytest.raises(RuntimeError, match="boom"):
        client.get("/acme/boom", headers=HOST)
    assert get(client, "/globex/boom") == 500  # Flask's own 500
    assert get(client, "/acme/") == 200
    text = scrape(dispatcher)
    assert 'dispatcher_requests_total{code="5xx",tenant="acme"} 1.0' in text
    assert 'dispatcher_requests_total{code="2xx",tenant="acme"} 1.0' in text
    assert 'dispatcher_requests_total{code="5xx",tenant="globex"} 1.0' in text
    assert 'dispatcher_request_duration_seconds_count{tenant="acme"} 2.0' in text
    assert dispatcher.tenants["acme"].in_flight == 0


def test_no_limit_lets_everything_in(
    make_dispatcher: Callable[[str], Dispatcher], tmp_path: Path
) -> None:
    dispatcher = make_dispatcher(tenants())  # outside uWSGI: no default limit
    client = Client(dispatcher)
    with ThreadPoolExecutor(6) as pool:
        held = [pool.submit(get, client, "/acme/wait/go") for _ in range(6)]
        wait_for(lambda: dispatcher.tenants["acme"].in_flight == 6, "six requests inside")
        (tmp_path / "instance" / "acme" / "go").touch()
        assert [f.result() for f in held] == [200] * 6


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
