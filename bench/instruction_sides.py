"""The sides bench/bench_instructions.py measures, and the tenants files they run on.

Every side is a WSGI callable and one request to it; the sides that load the same tenants file
run in one process. ``weight`` divides the number of requests of sides that cost many times a
normal request (a health check that counts 100,000 tenants), so they take no longer::

    side = BY_NAME["path"]
    file = tenants_file(work, side.tenants, side.evict)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

APP = "bench.tiny"


@dataclass(frozen=True)
class Side:
    name: str
    label: str
    #: The tenants file its process loads: the tenant count, and its kind (see FILES).
    tenants: int
    file: str = "mixed"
    #: A request through the routing to the tiny app: compared with the app alone.
    routed: bool = True
    weight: int = 1
    #: The status its request must answer (checked before counting).
    status: int = 200


SIDES = [
    Side("app", "the tenant's app alone (the baseline)", 1),
    Side("middleware", "werkzeug `DispatcherMiddleware` alone, 10,000 mounts", 1),
    Side("path", "dispatcher, path tenant, 10,000 tenants", 10_000),
    Side("host", "dispatcher, host tenant, 10,000 tenants", 10_000),
    Side(
        "path-unmetered",
        "dispatcher, path tenant, metrics off (`allow: []`)",
        10_000,
        file="unmetered",
    ),
    Side(
        "host-unmetered",
        "dispatcher, host tenant, metrics off (`allow: []`)",
        10_000,
        file="unmetered",
    ),
    Side("path-evict", "dispatcher, path tenant, eviction on", 10_000, file="evict"),
    Side("host-evict", "dispatcher, host tenant, eviction on", 10_000, file="evict"),
    Side("404", "an unknown path (404), 10,000 tenants", 10_000, routed=False, status=404),
    Side("health-100", "`GET /_dispatcher/health`, 100 tenants", 100, routed=False),
    Side("health", "`GET /_dispatcher/health`, 10,000 tenants", 10_000, routed=False, weight=5),
    Side(
        "health-100000",
        "`GET /_dispatcher/health`, 100,000 tenants",
        100_000,
        routed=False,
        weight=50,
    ),
    Side(
        "host-hit",
        "a host tenant's 503 (maintenance), the same host every time, 10,000 host tenants",
        10_000,
        file="hosts",
        routed=False,
        status=503,
    ),
    Side(
        "host-miss",
        "a host tenant's 503 (maintenance), each of 10,000 hosts in turn",
        10_000,
        file="hosts",
        routed=False,
        status=503,
    ),
]
BY_NAME = {side.name: side for side in SIDES}
#: The edit-measure loop: the baseline, the floor, and the two mounts.
QUICK = ("app", "middleware", "path", "host")


def name(i: int) -> str:
    return f"t{i:05d}"


#: ``mixed``: lazy tenants, the first half by path and the rest by subdomain; ``evict``: the
#: same with eviction on; ``unmetered``: with metrics off; ``hosts``: host tenants only, all in
#: maintenance (they answer 503 without building an app, so that a request can go to each of
#: 10,000 in turn).
FILES = ("mixed", "evict", "unmetered", "hosts")


def tenants_file(work: Path, count: int, kind: str) -> Path:
    """A tenants file of ``count`` tenants of bench/tiny.py (see :data:`FILES`)."""
    path = work / f"{count}-{kind}.yaml"
    if path.exists():
        return path
    lines = [
        "version: 1",
        "base_domain: localhost",
        "server_names: [127.0.0.1]",
        f"instance_root: {work / 'instance'}",
    ]
    if kind == "evict":
        lines += ["idle_timeout: 900", "max_live_apps: 1000"]
    if kind == "unmetered":
        lines += ["metrics: {allow: []}"]
    if kind == "hosts":
        lines += [f"defaults: {{app: {APP}, maintenance: true}}", "tenants:"]
        lines += [f"  {name(i)}: {{subdomain: {name(i)}}}" for i in range(count)]
        path.write_text("\n".join(lines) + "\n")
        return path
    lines += [f"defaults: {{app: {APP}, lazy: true}}", "tenants:"]
    half = max(count // 2, 1)
    lines += [f"  {name(i)}: {{path: /{name(i)}}}" for i in range(half)]
    lines += [f"  {name(i)}: {{subdomain: {name(i)}}}" for i in range(half, count)]
    path.write_text("\n".join(lines) + "\n")
    return path
