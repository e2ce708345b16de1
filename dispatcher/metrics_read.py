"""Read a node's ``/_dispatcher/metrics`` and turn two scrapes into per-tenant rates.

``python -m dispatcher top`` uses it: :func:`read` is :func:`fetch`, which reads the text over
HTTP, or over the uwsgi protocol from the socket nginx talks to
(``unix:/run/dispatcher/uwsgi.sock``), then :func:`parse`, which keeps the dispatcher's figures
per tenant (and refuses text that is not a dispatcher's metrics); :func:`rows` compares two
scrapes taken an interval apart: requests/s and errors from the counters' increase, p50/p99 from
the increase of each histogram bucket (as Prometheus' ``histogram_quantile`` does)::

    before = read(url); time.sleep(2); after = read(url)
    for row in rows(before, after): print(row.tenant, row.rate, row.p99)
"""

from __future__ import annotations

import http.client
import math
import reprlib
import socket
import struct
import time
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

METRICS_PATH = "/_dispatcher/metrics"
#: The samples :func:`parse` reads, and the label each needs besides ``tenant``.
READ_SAMPLES: dict[str, str | None] = {
    "dispatcher_requests_total": "code",
    "dispatcher_request_duration_seconds_bucket": "le",
    "dispatcher_requests_in_flight": None,
    "dispatcher_tenant_state": "state",
}


class ReadError(Exception):
    """The node did not answer with its metrics; the message says why and what to check."""


class NotMetrics(Exception):
    """A text that is not a dispatcher's metrics; the message says what is wrong with it."""


@dataclass
class Tenant:
    """One tenant's figures in one scrape (summed over the node's workers)."""

    requests: dict[str, float] = field(default_factory=dict)  # code class -> count
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    in_flight: float = 0.0
    states: dict[str, float] = field(default_factory=dict)  # state -> workers


@dataclass(frozen=True)
class Scrape:
    taken: float  # time.monotonic() when read
    tenants: dict[str, Tenant]


@dataclass(frozen=True)
class Row:
    """What ``top`` shows for a tenant over one interval."""

    tenant: str
    rate: float  # requests per second
    p50: float | None  # seconds; None: no request in the interval
    p99: float | None
    errors: float  # share of the interval's requests answered 5xx, 0..1
    in_flight: int
    state: str


def metrics_url(url: str) -> str:
    """``http://host:port`` -> ``http://host:port/_dispatcher/metrics``; others unchanged."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https") and parts.path in ("", "/"):
        return urllib.parse.urlunsplit(parts._replace(path=METRICS_PATH))
    return url


def read(url: str, timeout: float = 5.0) -> Scrape:
    """One scrape of the node at ``url``; :class:`ReadError` if it does not give its metrics."""
    text = fetch(url, timeout)
    try:
        return parse(text)
    except NotMetrics as e:
        raise ReadError(
            f"{url} did not answer with a dispatcher's metrics ({e}). Check the URL: a node's "
            "http://HOST:PORT, unix:/path/to/uwsgi.sock or uwsgi://HOST:PORT, not a tenant's "
            "page or /_dispatcher/health"
        ) from None


def fetch(url: str, timeout: float = 5.0) -> str:
    """The scrape's text; :class:`ReadError` if the node does not give it."""
    try:
        if url.startswith(("unix:", "uwsgi://")):
            status, body = _fetch_uwsgi(url, timeout)
        else:
            status, body = _fetch_http(url, timeout)
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e)
        raise ReadError(f"cannot read {url}: {reason}. Is the node running there?") from None
    if status == 404:
        raise ReadError(
            f"{url} answered 404: the node's tenants.yaml 'metrics: allow' does not let this "
            "client in, or this is not a dispatcher"
        )
    if status != 200:
        raise ReadError(f"{url} answered {status}, not the metrics")
    return body.decode("utf-8", "replace")


def _fetch_http(url: str, timeout: float) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("use http://HOST:PORT, unix:/path/to/uwsgi.sock or uwsgi://HOST:PORT")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", parts.path or METRICS_PATH)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _fetch_uwsgi(url: str, timeout: float) -> tuple[int, bytes]:
    """One request in the uwsgi protocol (what nginx's ``uwsgi_pass`` speaks), from this
    host: the node sees a direct loopback client, as with ``curl http://127.0.0.1...``."""
    if url.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: str | tuple[str, int] = url.removeprefix("unix:")
    else:
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname or not parts.port:
            raise ValueError("a uwsgi:// URL needs a host and a port")
        sock = socket.socket(socket.AF_INET6 if ":" in parts.hostname else socket.AF_INET)
        address = (parts.hostname, parts.port)
    variables = {
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": METRICS_PATH,
        "PATH_INFO": METRICS_PATH,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": "localhost",
        "REMOTE_ADDR": "127.0.0.1",
    }
    body = b"".join(
        struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode()
        for k, v in variables.items()
    )
    with sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(struct.pack("<BHB", 0, len(body), 0) + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, content = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ValueError("the socket did not answer in the uwsgi protocol")
    return int(status_line[1]), content


def parse(text: str, taken: float | None = None) -> Scrape:
    """The dispatcher's per-tenant figures in a scrape's text; :class:`NotMetrics` if the text
    is not a dispatcher's metrics: not Prometheus' text format, samples but none of the
    dispatcher's, or a sample of :data:`READ_SAMPLES` without its labels or not a count."""
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except (ValueError, OverflowError):  # a line it cannot read; a timestamp of 400 digits
        raise NotMetrics("the answer is not in Prometheus' text format") from None
    if samples and not any(s.name.startswith("dispatcher_") for s in samples):
        raise NotMetrics("the answer has no dispatcher_ figures")
    tenants: dict[str, Tenant] = defaultdict(Tenant)
    for sample in samples:
        if sample.name not in READ_SAMPLES:
            continue
        tenant, label, value = _figure(sample)
        figures = tenants[tenant]
        if sample.name == "dispatcher_requests_total":
            figures.requests[label] = value
        elif sample.name == "dispatcher_request_duration_seconds_bucket":
            figures.buckets[_bound(label)] = value
        elif sample.name == "dispatcher_requests_in_flight":
            figures.in_flight = value
        else:
            figures.states[label] = value
    return Scrape(time.monotonic() if taken is None else taken, dict(tenants))


def _figure(sample: Sample) -> tuple[str, str, float]:
    """A read sample's tenant, other label's value (``""`` if none) and value, checked: every
    figure ``top`` reads is a count (requests, observations, workers), finite and not negative."""
    label = READ_SAMPLES[sample.name]
    for name in ("tenant", label):
        if name is not None and name not in sample.labels:
            raise NotMetrics(f"a {sample.name} sample has no '{name}' label")
    try:
        value = float(sample.value)  # the parser gives an int for digits, maybe 400 of them
    except OverflowError:
        value = math.inf
    if not (math.isfinite(value) and value >= 0):
        raise NotMetrics(f"a {sample.name} sample is {value}, not a count")
    return sample.labels["tenant"], sample.labels[label] if label else "", value


def _bound(le: str) -> float:
    """A histogram bucket's upper bound: a number or ``+Inf``."""
    try:
        bound = float(le)
    except ValueError:
        bound = math.nan
    if math.isnan(bound):
        raise NotMetrics(
            "a dispatcher_request_duration_seconds_bucket sample's 'le' label is "
            f"{reprlib.repr(le)}, not a number"
        )
    return bound


def _increase(now: float, before: float) -> float:
    """A counter's increase; a counter that went down was reset (a node restart)."""
    return now - before if now >= before else now


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of cumulative bucket counts, interpolated within its bucket; the
    highest finite bound if it falls in the last one. ``None`` without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def rows(before: Scrape, after: Scrape) -> list[Row]:
    """Every tenant of the later scrape over the interval between the two, busiest first."""
    seconds = max(after.taken - before.taken, 1e-9)
    result = []
    for name, now in after.tenants.items():
        then = before.tenants.get(name, Tenant())
        requests = {c: _increase(v, then.requests.get(c, 0.0)) for c, v in now.requests.items()}
        total = sum(requests.values())
        buckets = {b: _increase(v, then.buckets.get(b, 0.0)) for b, v in now.buckets.items()}
        states = [s for s, workers in sorted(now.states.items()) if workers > 0]
        result.append(
            Row(
                tenant=name,
                rate=total / seconds,
                p50=quantile(0.5, buckets),
                p99=quantile(0.99, buckets),
                errors=requests.get("5xx", 0.0) / total if total else 0.0,
                in_flight=round(now.in_flight),
                state="/".join(states) or "-",
            )
        )
    result.sort(key=lambda r: (-r.rate, -r.in_flight, r.tenant))
    return result
