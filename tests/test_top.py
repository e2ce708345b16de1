"""``python -m dispatcher top``'s arithmetic (dispatcher.metrics_read) and its command line.
The live view against real uWSGI is in tests/e2e/test_metrics.py."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dispatcher.cli import main
from dispatcher.cli.top import default_url
from dispatcher.metrics import Metrics
from dispatcher.metrics_read import Scrape, Tenant, metrics_url, parse, quantile, rows

INF = float("inf")


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
    body, _ = metrics.render({"acme": 2}, {"acme": "ready"})
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


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com", "uwsgi://127.0.0.1", "unix:/nonexistent/uwsgi.sock", "http://[::1"],
)
def test_an_unusable_url_is_a_clear_error(url: str) -> None:
    result = CliRunner().invoke(main, ["top", "--once", "--url", url])
    assert result.exit_code == 1
    assert f"cannot read {url}" in result.output
    assert "Traceback" not in result.output
