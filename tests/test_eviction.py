"""Idle eviction of lazy tenants (``idle_timeout``, ``max_live_apps``)."""

from __future__ import annotations

import gc
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
from werkzeug.test import Client

from dispatcher import Dispatcher, TenantApp, dispatch
from dispatcher.database import app_engines
from tests.conftest import Clock
from tests.e2e.servers import wait_for

HOST = {"Host": "localhost"}  # requests below are buffered: the client closes them at once


def tenants(settings: str, app: str = "tests.apps.echo") -> str:
    return f"""
        version: 1
        server_names: [localhost]
        {settings}
        defaults: {{app: "{app}", mount: path, lazy: true}}
        tenants:
          a:
          b:
          c:
          eager: {{lazy: false}}
    """


def handle(dispatcher: Dispatcher, name: str) -> TenantApp:
    return dispatcher.tenants[name]


def test_idle_app_is_evicted_and_rebuilt(
    make_dispatcher: Callable[[str], Dispatcher], clock: Clock
) -> None:
    dispatcher = make_dispatcher(tenants("idle_timeout: 60"))
    client = Client(dispatcher)
    assert (
        client.post("/a/items", data={"text": "kept"}, headers=HOST, buffered=True).status_code
        == 201
    )
    first = handle(dispatcher, "a").app
    assert first is not None
    (engine,) = app_engines(first)
    assert engine.pool.checkedin() == 1
    dispatcher.tick()  # notes that a was used
    clock.now += 30
    assert client.get("/b/", headers=HOST, buffered=True).status_code == 200
    dispatcher.tick()  # a: idle 30 s, kept
    assert handle(dispatcher, "a").app is first
    clock.now += 45
    assert client.get("/b/", headers=HOST, buffered=True).status_code == 200
    dispatcher.tick()  # a: idle 75 s, evicted; b was just used
    assert handle(dispatcher, "a").app is None
    assert engine.pool.checkedin() == 0  # its connections were closed
    assert handle(dispatcher, "b").app is not None  # b was just used
    assert dispatcher.tenants["eager"].app is not None  # only lazy tenants are evicted
    health = client.get("/_dispatcher/health", headers=HOST, buffered=True).json
    assert health["tenants"] == {"ready": 2, "failed": 0, "lazy": 2, "maintenance": 0}
    assert client.get("/a/items", headers=HOST, buffered=True).json == {
        "items": ["kept"]
    }  # rebuilt
    assert handle(dispatcher, "a").app not in (None, first)


def test_least_recently_used_app_goes_past_the_cap(
    make_dispatcher: Callable[[str], Dispatcher], clock: Clock
) -> None:
    dispatcher = make_dispatcher(tenants("max_live_apps: 2"))
    client = Client(dispatcher)
    for name in ("a", "b", "a", "c"):  # b is now the least recently used
        clock.now += 1
        assert client.get(f"/{name}/", headers=HOST, buffered=True).status_code == 200
        dispatcher.tick()
    assert {n for n in "abc" if handle(dispatcher, n).app is not None} == {"a", "c"}


def test_app_with_a_request_in_flight_is_never_evicted(
    make_dispatcher: Callable[[str], Dispatcher], clock: Clock, tmp_path: Path
) -> None:
    dispatcher = make_dispatcher(tenants("idle_timeout: 60", app="tests.apps.hostile:ordinary"))
    client = Client(dispatcher)
    waiting = threading.Thread(target=lambda: client.get("/a/wait/go", headers=HOST))
    waiting.start()
    a = handle(dispatcher, "a")
    try:
        wait_for(lambda: a.app is not None and a.in_flight == 1, "the request to be in its view")
        clock.now += 600
        dispatcher.tick()  # the tick that would evict an idle app
        assert a.app is not None
    finally:
        (tmp_path / "instance" / "a" / "go").touch()
        waiting.join(10)
    assert a.in_flight == 0
    clock.now += 600
    dispatcher.tick()
    assert a.app is None


def test_eviction_racing_requests_never_disposes_a_pool_in_use(
    make_dispatcher: Callable[[str], Dispatcher],
) -> None:
    """Requests count themselves in flight with no lock; an eviction takes the app away first
    and looks at the count after. Hammered from both sides, with threads switching every few
    bytecodes, no request ever has its pool disposed under it, and evictions really happen."""
    dispatcher = make_dispatcher(tenants("idle_timeout: 60", app="tests.apps.hostile:ordinary"))
    client = Client(dispatcher)
    a = handle(dispatcher, "a")
    stop = threading.Event()
    evicted = [0]

    def evict() -> None:
        while not stop.is_set():
            evicted[0] += a.evict()

    evictor = threading.Thread(target=evict)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    evictor.start()
    answers = []
    deadline = time.monotonic() + 60
    try:
        while evicted[0] < 10 and time.monotonic() < deadline:
            answers.append(client.get("/a/pool", headers=HOST, buffered=True).json)
    finally:
        stop.set()
        evictor.join(10)
        sys.setswitchinterval(interval)
    assert evicted[0] >= 10  # the race was run: the app was evicted and rebuilt meanwhile
    assert answers == [{"same": True}] * len(answers)


def test_without_eviction_settings_lazy_apps_stay(
    make_dispatcher: Callable[[str], Dispatcher], clock: Clock
) -> None:
    dispatcher = make_dispatcher(tenants(""))
    client = Client(dispatcher)
    client.get("/a/", headers=HOST, buffered=True)
    clock.now += 10_000
    dispatcher.tick()
    assert dispatcher.tenants["a"].app is not None
    assert not dispatcher.live.enabled


def test_evicted_apps_a_freeze_had_moved_out_of_the_collectors_way_are_reclaimed(
    make_dispatcher: Callable[[str], Dispatcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An evictable app is not frozen after its build, but a later freeze (a reload's, or
    another tenant's build) moves it out of the collector's way with everything else: once
    evicted, it is counted, and the background thread reclaims it with the others."""
    monkeypatch.setattr(dispatch, "REFREEZE_AFTER", 3)
    dispatcher = make_dispatcher(tenants("idle_timeout: 60", app="tests.apps.hostile:ordinary"))
    client = Client(dispatcher)
    for name in ("a", "b", "c"):  # their views refer to the app: reference cycles
        assert client.get(f"/{name}/", headers=HOST, buffered=True).status_code == 200
    apps = [weakref.ref(handle(dispatcher, name).app) for name in ("a", "b", "c")]
    dispatcher.swap(dispatcher.tenant_set)  # a reload that changes nothing, and freezes
    for name in ("a", "b", "c"):
        assert dispatcher.live.evict(handle(dispatcher, name))
    gc.collect()
    assert all(app() is not None for app in apps)  # frozen: no collection frees them
    dispatcher.tick()
    assert [app() for app in apps] == [None, None, None]
