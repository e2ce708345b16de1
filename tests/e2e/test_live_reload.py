"""Live reload of tenants.yaml under real uWSGI (2 processes x 4 threads) behind nginx.

Each worker looks at the file at most once a second, on a request, so within 2 s of an edit
every worker must serve the new set (DESIGN section 6, issue 4). Requests are sent 16 at a time
so that both workers take some; the probe app answers with the pid of the worker that served it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from .client import Reply
from .servers import wait_for
from .stack import TENANTS, Stack

pytestmark = pytest.mark.e2e

ADDED = "  probe2: {path: /probe2, app: tests.e2e.probe_app}\n"


def burst(stack: Stack, path: str, count: int = 16) -> list[Reply]:
    """``count`` concurrent requests to ``https://app.example.com/...path``."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: stack.https("app.example.com", path), range(count)))


def edit(stack: Stack, text: str) -> float:
    (stack.folder / "tenants.yaml").write_text(text)
    return time.monotonic()


def test_added_tenant_is_served_by_every_worker_within_2_s(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    workers = {w.pid for w in stack.uwsgi.workers()}
    assert all(r.status == 404 for r in burst(stack, "/probe2/conn"))
    written = edit(stack, TENANTS + ADDED)
    served_by: set[int] = set()

    def every_worker_serves_it() -> bool:
        replies = burst(stack, "/probe2/conn")
        served_by.update(r.json()["pid"] for r in replies if r.status == 200)
        return served_by >= workers

    wait_for(every_worker_serves_it, "every worker to serve the added tenant", timeout=2.0)
    print(
        f"added tenant served by workers {sorted(served_by)} after "
        f"{time.monotonic() - written:.2f} s"
    )
    assert all(r.status == 200 for r in burst(stack, "/probe2/conn"))


def test_removed_tenant_404s_within_2_s(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    edit(stack, TENANTS + ADDED)
    wait_for(lambda: all(r.status == 200 for r in burst(stack, "/probe2/conn")), "the add")
    edit(stack, TENANTS)
    wait_for(
        lambda: all(r.status == 404 for r in burst(stack, "/probe2/conn", 32)),
        "every worker to drop the removed tenant",
        timeout=2.0,
    )
    assert all(r.status == 200 for r in burst(stack, "/acme/"))


def test_invalid_edit_keeps_every_tenant_serving(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    seen = len(stack.uwsgi.log_text())
    edit(stack, TENANTS + "  acme: {path: /acme2}\n" + ADDED)  # a duplicate: all of it refused
    deadline = time.monotonic() + 2.5  # past every worker's next look at the file
    statuses: set[int] = set()
    while time.monotonic() < deadline:
        statuses.update(r.status for r in burst(stack, "/acme/"))
        statuses.update(r.status for r in burst(stack, "/probe/conn", 4))
    assert statuses == {200}
    assert all(r.status == 404 for r in burst(stack, "/probe2/conn"))  # nothing half-applied
    log = stack.uwsgi.log_text()[seen:]
    assert "is not valid; still serving the previous tenants" in log
    assert "duplicate tenant 'acme'" in log
