"""A hostile tenants file as a live edit under real uWSGI (2 processes x 4 threads), behind
nginx (DESIGN 9, issue 11): refused and logged by every worker, no worker dies, no request
fails. Before issue 11, deep nesting segfaulted libyaml in every worker (and in every one
respawned), and a self-referencing alias escaped the reloader as a RecursionError.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.hostile.test_files import LAUGHS

from .client import Reply
from .stack import TENANTS, Stack

pytestmark = pytest.mark.e2e

HOSTILE = {
    "deep-nesting": (
        TENANTS + "  x: {path: /x, config: {X: " + "[" * 100_000 + "]" * 100_000 + "}}\n"
    ),
    "billion-laughs": TENANTS + "  x:\n    path: /x\n    config:\n      X:\n" + LAUGHS,
    "self-referencing-alias": TENANTS + "  x: &x {path: /x, config: {X: *x}}\n",
}


def burst(stack: Stack, path: str, count: int = 16) -> list[Reply]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: stack.https("app.example.com", path), range(count)))


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_edit_is_refused_by_every_worker_and_no_request_fails(
    make_stack: Callable[[], Stack], name: str
) -> None:
    stack = make_stack()
    workers = {w.pid for w in stack.uwsgi.workers()}
    seen = len(stack.uwsgi.log_text())
    (stack.folder / "tenants.yaml").write_text(HOSTILE[name])
    deadline = time.monotonic() + 2.5  # past every worker's next look at the file
    statuses: set[int] = set()
    served_by: set[int] = set()
    while time.monotonic() < deadline:
        replies = burst(stack, "/probe/conn")
        statuses.update(r.status for r in replies)
        served_by.update(r.json()["pid"] for r in replies if r.status == 200)
        statuses.update(r.status for r in burst(stack, "/acme/", 4))
    assert statuses == {200}
    assert served_by <= workers  # served by the workers that were there: none died
    assert {w.pid for w in stack.uwsgi.workers()} == workers
    log = stack.uwsgi.log_text()[seen:]
    refusals = log.count("is not valid; still serving the previous tenants")
    assert refusals == len(workers), log[-3000:]
    assert f"{stack.folder / 'tenants.yaml'}:" in log
    for crash in ("DAMN ! worker", "signal 11", "Segmentation", "Traceback", "RecursionError"):
        assert crash not in log
    assert all(r.status == 404 for r in burst(stack, "/x/"))  # nothing half-applied
