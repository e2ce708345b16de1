"""dispatcher.collector: pausing the garbage collector while a tenants file loads, and what is
kept frozen after."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from dispatcher import collector
from dispatcher.problems import ConfigError


@pytest.fixture(autouse=True)
def collector_as_it_was() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    (gc.enable if enabled else gc.disable)()


def test_pauses_overlapping_in_two_threads_leave_the_collector_running() -> None:
    """A reload on the background thread and another loading at once (a second dispatcher):
    the collector runs again only once both are done, whichever ends first."""
    first_in, first_may_end = threading.Event(), threading.Event()
    during: list[bool] = []

    def first() -> None:
        with collector.paused():
            first_in.set()
            first_may_end.wait(10)
        during.append(gc.isenabled())  # the second is still paused

    thread = threading.Thread(target=first)
    thread.start()
    assert first_in.wait(10)
    with collector.paused():
        first_may_end.set()
        thread.join(10)
        assert not gc.isenabled()
    assert during == [False]
    assert gc.isenabled()


def test_a_collector_turned_off_before_stays_off() -> None:
    gc.disable()
    with collector.paused():
        pass
    assert not gc.isenabled()


def test_a_load_that_fails_leaves_the_collector_running_and_freezes_nothing() -> None:
    freezes = collector.freezes()

    def invalid() -> None:
        raise ConfigError([])

    with pytest.raises(ConfigError):
        collector.kept(invalid)
    assert gc.isenabled()
    assert collector.freezes() == freezes


def test_what_a_load_made_is_frozen_with_it() -> None:
    loaded = collector.kept(lambda: [{"tenant": n} for n in range(100)])
    tracked = {id(o) for o in gc.get_objects()}
    assert id(loaded) not in tracked and id(loaded[0]) not in tracked
    assert gc.isenabled()
