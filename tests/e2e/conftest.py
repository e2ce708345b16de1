"""Fixtures for the end-to-end tests: the project's uwsgi.ini behind the shipped nginx sites.

The tests need nginx, uWSGI (in the virtualenv running pytest) and openssl (for a test
certificate). Locally they skip, saying what is missing; under ``CI=true`` they fail instead
(``.ci/run`` installs nginx). The counts that load tests pass to ``report_counts`` are printed
in an "end-to-end counts" section at the end of the run, whatever the ``-r``/``-s`` options.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .servers import UWSGI, Tools
from .stack import Stack, make_certificate

_COUNTS = pytest.StashKey[list[str]]()


def _find(name: str) -> str | None:
    # Debian installs nginx in /usr/sbin, which is not on a normal user's PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


@pytest.fixture(scope="session")
def tools() -> Tools:
    """nginx and openssl; skip (fail under CI=true) when one of them or uWSGI is missing."""
    nginx, openssl = _find("nginx"), _find("openssl")
    missing = [
        what
        for what, found in (
            ("nginx (apt-get install nginx)", nginx),
            ("openssl (apt-get install openssl)", openssl),
            (f"uWSGI at {UWSGI} (make test installs it)", os.access(UWSGI, os.X_OK)),
        )
        if not found
    ]
    if missing:
        reason = "end-to-end tests need " + " and ".join(missing)
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"{reason}; under CI=true they may not skip")
        pytest.skip(reason)
    assert nginx and openssl
    return Tools(nginx, openssl)


@pytest.fixture(scope="session")
def certs(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with fullchain.pem and privkey.pem for example.com and *.example.com."""
    return make_certificate(tmp_path_factory.mktemp("certs"), tools.openssl)


@pytest.fixture(scope="session")
def stack(tools: Tools, certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One deployment shared by the tests that do not restart or kill anything."""
    with Stack.running(tmp_path_factory.mktemp("stack"), nginx=tools.nginx, certs=certs) as s:
        yield s


@pytest.fixture
def make_stack(tools: Tools, certs: Path, tmp_path: Path) -> Iterator[Callable[[], Stack]]:
    """Start a deployment of the test's own, stopped at the end of the test."""
    numbers = itertools.count()
    with contextlib.ExitStack() as stacks:

        def make() -> Stack:
            folder = tmp_path / f"stack{next(numbers)}"
            return stacks.enter_context(Stack.running(folder, nginx=tools.nginx, certs=certs))

        yield make


@pytest.fixture
def report_counts(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Callable[..., None]:
    """``report_counts(sent=300, ok=300)``: kept in JUnit XML, printed at the end of the run."""
    lines = request.config.stash.setdefault(_COUNTS, [])

    def report(**counts: object) -> None:
        for name, value in counts.items():
            record_property(name, value)
        text = ", ".join(f"{name}={value}" for name, value in counts.items())
        lines.append(f"{request.node.nodeid}: {text}")

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_COUNTS, [])
    if lines:
        terminalreporter.section("end-to-end counts")
        for line in lines:
            terminalreporter.line(line)
