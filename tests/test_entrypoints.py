"""The entry points: ``wsgi.py`` (``application``, ``app``), ``flask --app wsgi run`` and
``python -m dispatcher serve`` (DESIGN.md sections 6 and 10)."""

from __future__ import annotations

import http.client
import json
import os
import runpy
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import Client

from dispatcher import ConfigError, Dispatcher
from dispatcher.uwsgi_api import uwsgi_api
from tests.conftest import ECHO_TENANTS, ROOT
from tests.e2e.servers import wait_for

WriteTenants = Callable[..., Path]
WSGI = ROOT / "wsgi.py"

BAD = """\
    version: 1
    defaults: {app: tests.apps.echo}
    tenants:
      acme: {pth: /acme}
      globex: {path: /globex/}
      initech: {path: /initech, app: tests.apps.ech}
"""


RunWsgi = Callable[..., dict[str, Any]]


@pytest.fixture
def run_wsgi(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunWsgi]:
    """Run ``wsgi.py`` (or a copy) on a tenants file, as uWSGI imports it; its namespace. Each
    dispatcher it made (``application``) is closed after the test."""
    made: list[Dispatcher] = []

    def run(tenants_file: Path | None, wsgi: Path = WSGI) -> dict[str, Any]:
        if tenants_file is not None:
            monkeypatch.setenv("TENANTS_FILE", str(tenants_file))
        ns = runpy.run_path(str(wsgi))
        made.append(ns["application"])
        return ns

    yield run
    for dispatcher in made:
        dispatcher.close()


def tenant_at(wsgi_app: Any, path: str, host: str = "localhost") -> str:
    response = Client(wsgi_app).get(path, headers={"Host": host})
    assert response.status_code == 200, response.status
    return str(response.json["tenant"])


# --- wsgi.py -------------------------------------------------------------------------------


def test_wsgi_application_and_app(write_tenants: WriteTenants, run_wsgi: RunWsgi) -> None:
    ns = run_wsgi(write_tenants(ECHO_TENANTS))
    application, app = ns["application"], ns["app"]
    assert isinstance(application, Dispatcher)
    assert tenant_at(application, "/acme/") == "acme"
    assert tenant_at(application, "/", "umbrella.localhost") == "umbrella"
    assert Client(application).get("/nope/", headers={"Host": "localhost"}).status_code == 404

    assert isinstance(app, Flask)
    assert app.wsgi_app is application
    assert app.test_client().get("/acme/", headers={"Host": "localhost"}).json["tenant"] == "acme"
    assert tenant_at(app, "/globex/") == "globex"


def test_wsgi_builds_a_fresh_dispatcher_each_run(
    write_tenants: WriteTenants, run_wsgi: RunWsgi
) -> None:
    file = write_tenants(ECHO_TENANTS)
    first = run_wsgi(file)["application"]
    file.write_text(file.read_text() + "  initech: {path: /initech}\n")
    second = run_wsgi(file)["application"]
    assert second is not first
    assert tenant_at(second, "/initech/") == "initech"
    assert Client(first).get("/initech/", headers={"Host": "localhost"}).status_code == 404
    assert tenant_at(first, "/acme/") == "acme"


@pytest.mark.parametrize("env", [None, ""], ids=["unset", "empty"])
def test_wsgi_defaults_to_tenants_yaml_beside_it(
    monkeypatch: pytest.MonkeyPatch,
    write_tenants: WriteTenants,
    tmp_path: Path,
    env: str | None,
    run_wsgi: RunWsgi,
) -> None:
    # A copy of wsgi.py beside a temporary tenants.yaml: the real one would build into instance/.
    write_tenants(ECHO_TENANTS, "tenants.yaml")
    wsgi = Path(shutil.copy(WSGI, tmp_path / "wsgi.py"))
    if env is None:
        monkeypatch.delenv("TENANTS_FILE", raising=False)
    else:
        monkeypatch.setenv("TENANTS_FILE", env)
    ns = run_wsgi(None, wsgi)
    assert tenant_at(ns["application"], "/acme/") == "acme"
    assert (tmp_path / "instance" / "acme").is_dir()


def test_a_uwsgi_folder_beside_the_tenants_file_is_not_taken_for_uwsgi(
    monkeypatch: pytest.MonkeyPatch, write_tenants: WriteTenants, tmp_path: Path, run_wsgi: RunWsgi
) -> None:
    # Servers keep logs and sockets in a uwsgi/ folder beside tenants.yaml, whose folder is on
    # sys.path: outside uWSGI, `import uwsgi` then finds an empty namespace package.
    (tmp_path / "uwsgi").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "uwsgi", raising=False)
    import uwsgi  # noqa: F401  # the folder, not uWSGI

    assert uwsgi_api() is None
    application = run_wsgi(write_tenants(ECHO_TENANTS))["application"]
    assert tenant_at(application, "/acme/") == "acme"
    assert application.metrics.folder is None  # figures in this process, as outside uWSGI


def test_wsgi_bad_file_raises_config_error(
    write_tenants: WriteTenants, tmp_path: Path, run_wsgi: RunWsgi
) -> None:
    file = write_tenants(BAD)
    with pytest.raises(ConfigError) as caught:
        run_wsgi(file)
    message = str(caught.value).splitlines()
    assert [line.partition(": ")[0] for line in message] == [f"{file}:{n}" for n in (4, 5, 6)]
    for tenant, field in [("acme", "pth"), ("globex", "path"), ("initech", "app")]:
        assert any(f"tenant '{tenant}', field '{field}'" in line for line in message)
    assert not (tmp_path / "instance").exists()


# --- real servers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, host: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def server_env(tenants_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "WERKZEUG_"))}
    return {**env, "TENANTS_FILE": str(tenants_file), "PYTHONUNBUFFERED": "1"}


FLASK_RUN = [str(Path(sys.executable).with_name("flask")), "--app", "wsgi", "run", "--port"]
SERVE = [sys.executable, "-m", "dispatcher", "serve", "--no-reload", "--port"]


@pytest.mark.parametrize("command", [FLASK_RUN, SERVE], ids=["flask-run", "dispatcher-serve"])
def test_dev_server_serves_every_tenant(
    write_tenants: WriteTenants, tmp_path: Path, command: list[str]
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, str(port)],
            cwd=ROOT,
            env=server_env(write_tenants(ECHO_TENANTS)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def healthy() -> bytes | None:
        """The health page's body once the server answers 200; it must not have exited."""
        assert proc.poll() is None, f"server exited {proc.returncode}:\n{log.read_text()}"
        try:
            status, body = http_get(port, "/_dispatcher/health", f"localhost:{port}")
        except OSError:  # not listening yet
            return None
        return body if status == 200 else None

    try:
        body = wait_for(healthy, "the server to answer its health page", timeout=30)
        assert json.loads(body)["tenants"]["ready"] == 3
        status, body = http_get(port, "/acme/", f"localhost:{port}")
        assert (status, json.loads(body)["tenant"]) == (200, "acme")
        status, body = http_get(port, "/", f"umbrella.localhost:{port}")
        assert (status, json.loads(body)["tenant"]) == (200, "umbrella")
        assert http_get(port, "/", f"nope.localhost:{port}")[0] == 404
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("reload", ["--no-reload", "--reload"])
def test_serve_bad_file_exits_at_once(
    write_tenants: WriteTenants, tmp_path: Path, reload: str
) -> None:
    file = write_tenants(BAD)
    with socket.socket() as held:  # a server that tried to bind would say the port is in use
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "dispatcher",
                "-f",
                str(file),
                "serve",
                reload,
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=server_env(file),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1
    assert f"{file}:4: tenant 'acme', field 'pth'" in proc.stderr
    assert f"{file}:6: tenant 'initech', field 'app'" in proc.stderr
    for text in ("Traceback", "in use", "Running on"):
        assert text not in proc.stderr + proc.stdout
    assert not (tmp_path / "instance").exists()
