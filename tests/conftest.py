"""Fixtures shared by the dispatcher's own tests.

Every test works on files under ``tmp_path``; the session fixture below fails the run if the
real ``instance/`` folder changed, and a leaked Flask app or request context fails its test.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from flask.globals import _cv_app, _cv_request
from werkzeug.test import Client

from dispatcher import Dispatcher, load_tenants
from dispatcher.limits import worker_threads

ROOT = Path(__file__).resolve().parent.parent

#: Three tenants of the echo test app: two by path, one by subdomain.
ECHO_TENANTS = """
    version: 1
    base_domain: localhost
    server_names: [localhost]
    defaults: {app: tests.apps.echo}
    tenants:
      acme: {path: /acme}
      globex: {path: /globex}
      umbrella: {subdomain: umbrella}
"""


def snapshot(folder: Path) -> str:
    """A digest of every path and file content under ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session", autouse=True)
def real_instance_untouched() -> Iterator[None]:
    """Nothing a test does may create, change or delete anything in the real instance/."""
    before = snapshot(ROOT / "instance")
    yield
    assert snapshot(ROOT / "instance") == before, "a test changed the real instance/ folder"


@pytest.fixture(autouse=True)
def no_leaked_context() -> Iterator[None]:
    """Flask's own leak detector: a test must pop every app and request context it pushes."""
    yield
    assert _cv_request.get(None) is None, "a test leaked a request context"
    assert _cv_app.get(None) is None, "a test leaked an app context"


@pytest.fixture(autouse=True)
def no_leaked_dispatcher() -> Iterator[None]:
    """A dispatcher made with its background thread must be closed by the test that made it:
    left running, it goes on ticking (reloading, retrying builds, logging) during later tests."""
    before = set(threading.enumerate())
    yield
    for thread in set(threading.enumerate()) - before:
        if thread.name == "dispatcher ticks":
            thread.join(10)  # close() stops it at its next wake-up, a tick at most away
            assert not thread.is_alive(), "a test left a dispatcher running: close() it"


@pytest.fixture(autouse=True)
def process_state_restored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test starts from the process state the session started with, whatever the order:
    what the code under test changes for the whole process is put back after every test.

    - ``sys.path``: loading a tenants file puts its folder there (so its tenant packages
      import); each test's folder is gone after it, and must not shadow modules in later tests.
    - ``sys.modules``: tenant packages imported from a test's folder (under pytest's basetemp)
      are forgotten, so a later test's package of the same name is imported afresh.
    - Logging: the CLI, ``wsgi.py`` and ``serve`` configure the root logger (handlers, level);
      a dispatcher installs the log record factory that adds ``record.tenant``.
    - ``os.environ`` and the working directory.
    - :func:`dispatcher.limits.worker_threads`, cached for the process's life (a test may fake
      uWSGI).
    """
    path, modules, cwd, environ = list(sys.path), set(sys.modules), os.getcwd(), dict(os.environ)
    root = logging.getLogger()
    handlers, level, factory = list(root.handlers), root.level, logging.getLogRecordFactory()
    yield
    sys.path[:] = path
    basetemp = str(tmp_path_factory.getbasetemp())
    for name in set(sys.modules) - modules:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(basetemp):
            del sys.modules[name]
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.setLogRecordFactory(factory)
    if os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)
    os.chdir(cwd)
    worker_threads.cache_clear()


@pytest.fixture
def write_tenants(tmp_path: Path) -> Callable[[str], Path]:
    """Write a tenants file (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "tenants.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def make_dispatcher(
    write_tenants: Callable[[str], Path],
) -> Iterator[Callable[[str], Dispatcher]]:
    """Build a dispatcher from tenants-file text, on tmp_path. Its background work (reload,
    holds, eviction, retries) runs only when the test calls ``dispatcher.tick()``."""
    made: list[Dispatcher] = []

    def make(text: str = ECHO_TENANTS) -> Dispatcher:
        made.append(Dispatcher(load_tenants(write_tenants(text)), background=False))
        return made[-1]

    yield make
    for dispatcher in made:
        dispatcher.close()


@pytest.fixture
def echo_client(make_dispatcher: Callable[[str], Dispatcher]) -> Client:
    """A test client (with a cookie jar) for the dispatcher of the echo tenants."""
    return Client(make_dispatcher(ECHO_TENANTS))


class Clock:
    """Stands in for ``time.monotonic``, so "a second later" (a reload check, an idle
    timeout, a build retry) takes no time in a test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A clock the test moves by hand (``clock.now += 61``)."""
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    return clock


def postgres(database: str = "postgres") -> psycopg.Connection:
    """An autocommit connection to the machine's PostgreSQL server, as its superuser."""
    return psycopg.connect(host="127.0.0.1", user="postgres", dbname=database, autocommit=True)


@pytest.fixture
def pg_prefix() -> Iterator[str]:
    """A unique database-name prefix on the real PostgreSQL server; every database with it is
    dropped afterwards. Skips without a server, except under CI=true, where it fails."""
    try:
        postgres().close()
    except psycopg.OperationalError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL must run under CI=true: {e}")
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({e})")
    prefix = f"dtest_{uuid.uuid4().hex[:8]}_"
    yield prefix
    with postgres() as connection:
        names = connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)
        ).fetchall()
        for (name,) in names:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
