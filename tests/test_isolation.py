"""The isolation promises of DESIGN section 4, through the dispatcher: keys, cookies, data."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from werkzeug.test import Client

from dispatcher import Dispatcher
from dispatcher.build import app_engines
from dispatcher.errors import IsolationError
from dispatcher.isolation import load_or_create_secret

HOST = {"Host": "localhost"}


def login(echo_client: Client, tenant: str, user: str, host: str = "localhost") -> None:
    prefix = "" if tenant == "umbrella" else f"/{tenant}"
    response = echo_client.post(f"{prefix}/login", data={"user": user}, headers={"Host": host})
    assert response.status_code == 302


def whoami(echo_client: Client, tenant: str, host: str = "localhost") -> str | None:
    prefix = "" if tenant == "umbrella" else f"/{tenant}"
    data = echo_client.get(f"{prefix}/whoami", headers={"Host": host}).json
    assert data is not None and data["tenant"] == tenant
    return data["user"]  # type: ignore[no-any-return]


def test_logged_in_to_every_tenant_in_one_cookie_jar(echo_client: Client) -> None:
    login(echo_client, "acme", "ann")
    login(echo_client, "globex", "bob")
    login(echo_client, "umbrella", "cy", host="umbrella.localhost")
    assert whoami(echo_client, "acme") == "ann"
    assert whoami(echo_client, "globex") == "bob"
    assert whoami(echo_client, "umbrella", host="umbrella.localhost") == "cy"


def test_session_cookie_is_scoped_to_its_tenant(echo_client: Client) -> None:
    acme = echo_client.post("/acme/login", data={"user": "ann"}, headers=HOST).headers["Set-Cookie"]
    assert acme.startswith("session_acme=")
    assert "Path=/acme" in acme
    assert "HttpOnly" in acme
    assert "Domain" not in acme
    umbrella = echo_client.post(
        "/login", data={"user": "cy"}, headers={"Host": "umbrella.localhost"}
    ).headers["Set-Cookie"]
    assert umbrella.startswith("session_umbrella=")
    assert "Domain" not in umbrella


@pytest.mark.parametrize("as_name", ["session_acme", "session_globex"])
def test_cookie_replayed_to_another_tenant_is_rejected(echo_client: Client, as_name: str) -> None:
    login(echo_client, "acme", "ann")
    value = echo_client.get_cookie("session_acme", path="/acme")
    assert value is not None
    other = Client(echo_client.application)
    other.set_cookie(as_name, value.value, path="/")
    assert whoami(other, "globex") is None
    other.set_cookie(as_name, value.value, domain="umbrella.localhost", path="/")
    assert whoami(other, "umbrella", host="umbrella.localhost") is None


def test_app_cannot_widen_its_cookie(make_dispatcher: Callable[[str], Dispatcher]) -> None:
    echo_client = Client(
        make_dispatcher(
            """
            version: 1
            base_domain: localhost
            defaults:
              app: tests.apps.echo
              config:
                SESSION_COOKIE_DOMAIN: localhost
                SESSION_COOKIE_PATH: /
                SESSION_COOKIE_NAME: s
            tenants:
              acme: {path: /acme}
              umbrella: {subdomain: umbrella}
            """
        )
    )
    acme = echo_client.post("/acme/login", data={"user": "a"}, headers=HOST).headers["Set-Cookie"]
    assert acme.startswith("session_acme=") and "Path=/acme" in acme and "Domain" not in acme
    umbrella = echo_client.post(
        "/login", data={"user": "c"}, headers={"Host": "umbrella.localhost"}
    ).headers["Set-Cookie"]
    assert umbrella.startswith("session_umbrella=") and "Domain" not in umbrella


def secret(dispatcher: Dispatcher, name: str) -> str:
    app = dispatcher.tenants[name].app
    assert app is not None
    return str(app.config["SECRET_KEY"])


def test_generated_secret_keys_are_private_stable_and_distinct(
    make_dispatcher: Callable[[str], Dispatcher], tmp_path: Path
) -> None:
    first = make_dispatcher(
        "version: 1\ndefaults: {app: tests.apps.echo, mount: path}\ntenants: {acme: , globex: }"
    )
    key_file = tmp_path / "instance" / "acme" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert secret(first, "acme") == key_file.read_text()
    assert secret(first, "acme") != "dev"  # the factory's tutorial default is replaced
    assert secret(first, "acme") != secret(first, "globex")
    second = make_dispatcher(
        "version: 1\ndefaults: {app: tests.apps.echo, mount: path}\ntenants: {acme: , globex: }"
    )
    assert secret(second, "acme") == secret(first, "acme")


def test_operator_keys_win(make_dispatcher: Callable[[str], Dispatcher], tmp_path: Path) -> None:
    instance = tmp_path / "instance" / "globex"
    instance.mkdir(parents=True)
    (instance / "config.py").write_text("SECRET_KEY = 'from-instance-config'\n")
    dispatcher = make_dispatcher(
        """
        version: 1
        defaults: {app: tests.apps.echo, mount: path}
        tenants:
          acme: {config: {SECRET_KEY: from-yaml}}
          globex: {config: {SECRET_KEY: overridden-by-instance-config}}
        """
    )
    assert secret(dispatcher, "acme") == "from-yaml"
    assert secret(dispatcher, "globex") == "from-instance-config"
    assert not (tmp_path / "instance" / "acme" / "secret_key").exists()


def test_key_shared_through_instance_configs_is_refused(
    make_dispatcher: Callable[[str], Dispatcher], tmp_path: Path
) -> None:
    for name in ("acme", "globex"):
        (tmp_path / "instance" / name).mkdir(parents=True)
        (tmp_path / "instance" / name / "config.py").write_text("SECRET_KEY = 'same'\n")
    echo_client = Client(
        make_dispatcher(
            "version: 1\ndefaults: {app: tests.apps.echo, mount: path}\ntenants: {acme: , globex: }"
        )
    )
    statuses = sorted(
        echo_client.get(f"/{n}/", headers=HOST).status_code for n in ("acme", "globex")
    )
    assert statuses == [200, 503]


def test_secret_created_once_under_concurrent_threads(tmp_path: Path) -> None:
    barrier = threading.Barrier(16)
    keys: list[str] = []

    def create() -> None:
        barrier.wait(10)
        keys.append(load_or_create_secret(str(tmp_path)))

    threads = [threading.Thread(target=create) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(keys) == 16 and len(set(keys)) == 1
    assert os.listdir(tmp_path) == ["secret_key"]


def _create_in_process(
    folder: str, barrier: threading.Barrier, queue: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    barrier.wait(10)
    queue.put(load_or_create_secret(folder))


def test_secret_created_once_by_workers_booting_together(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(6), context.Queue()
    workers = [
        context.Process(target=_create_in_process, args=(str(tmp_path), barrier, queue))
        for _ in range(6)
    ]
    for worker in workers:
        worker.start()
    keys = [queue.get(timeout=20) for _ in workers]
    for worker in workers:
        worker.join(10)
        assert worker.exitcode == 0
    assert len(set(keys)) == 1
    assert os.listdir(tmp_path) == ["secret_key"]


def test_empty_secret_file_is_refused_not_used(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("")
    with pytest.raises(IsolationError, match="holds no usable key; delete it"):
        load_or_create_secret(str(tmp_path))


def test_data_written_to_one_tenant_is_invisible_to_another(
    echo_client: Client, tmp_path: Path
) -> None:
    assert echo_client.post("/acme/items", data={"text": "acme's"}, headers=HOST).status_code == 201
    assert echo_client.get("/acme/items", headers=HOST).json == {"items": ["acme's"]}
    assert echo_client.get("/globex/items", headers=HOST).json == {"items": []}
    assert (tmp_path / "instance" / "acme" / "app.db").exists()
    assert (tmp_path / "instance" / "globex" / "app.db").exists()


def test_sqlite_runs_in_wal_mode_with_busy_timeout(echo_client: Client, tmp_path: Path) -> None:
    echo_client.post("/acme/items", data={"text": "x"}, headers=HOST)
    with sqlite3.connect(tmp_path / "instance" / "acme" / "app.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    app = echo_client.application.tenants["acme"].app  # type: ignore[attr-defined]
    (engine,) = app_engines(app)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000


def test_concurrent_read_then_write_never_locks(echo_client: Client) -> None:
    """Each POST /items reads, then writes: without BEGIN IMMEDIATE this fails 'locked'."""
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        local = Client(echo_client.application)
        barrier.wait(10)
        for i in range(25):
            response = local.post("/acme/items", data={"text": f"{n}-{i}"}, headers=HOST)
            statuses.append(response.status_code)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses.count(201) == 200, sorted(set(statuses))
    assert len(echo_client.get("/acme/items", headers=HOST).json["items"]) == 200


def test_no_connection_survives_the_build(echo_client: Client) -> None:
    """A uWSGI master that builds before forking must not hand a connection to workers."""
    for handle in echo_client.application.tenants.values():  # type: ignore[attr-defined]
        for engine in app_engines(handle.app):
            assert engine.pool.checkedin() == 0


def _build_in_process(
    tenant: object, barrier: threading.Barrier, queue: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    from dispatcher import build_app

    barrier.wait(10)
    try:
        build_app(tenant)  # type: ignore[arg-type]
        queue.put("ok")
    except Exception as e:
        queue.put(f"{type(e).__name__}: {e}")


@pytest.mark.parametrize(
    ("app", "backend"),
    [("tenants.notes", "sqlite"), ("tests.apps.echo", "sqlite"), ("tenants.notes", "postgresql")],
)
def test_workers_booting_together_create_a_new_schema_once(
    write_tenants: Callable[[str], Path], request: pytest.FixtureRequest, app: str, backend: str
) -> None:
    """uWSGI's lazy-apps builds every tenant in every worker at the same moment; on
    PostgreSQL, two workers running the first migration at once would collide."""
    from dispatcher import load_tenants
    from dispatcher.database import ensure_database

    database = ""
    if backend == "postgresql":
        prefix = request.getfixturevalue("pg_prefix")
        database = f", database: 'postgresql://postgres@127.0.0.1/{prefix}acme'"
    text = f"version: 1\ntenants: {{acme: {{app: {app}, path: /a{database}}}}}"
    tenant = load_tenants(write_tenants(text))["acme"]
    ensure_database(tenant.database_uri)
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(4), context.Queue()
    workers = [
        context.Process(target=_build_in_process, args=(tenant, barrier, queue)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(10)
    assert results == ["ok"] * 4


def test_a_file_where_the_instance_folder_goes_is_a_clear_503(
    make_dispatcher: Callable[[str], Dispatcher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "instance").mkdir()
    (tmp_path / "instance" / "acme").write_text("not a folder")
    dispatcher = make_dispatcher(
        "version: 1\nserver_names: [localhost]\ndefaults: {app: tests.apps.echo}\n"
        "tenants: {acme: {path: /acme}, globex: {path: /globex}}\n"
    )
    client = Client(dispatcher)
    get = lambda path: client.get(path, headers={"Host": "localhost"}).status_code  # noqa: E731
    assert (get("/acme/"), get("/globex/")) == (503, 200)
    (record,) = [r for r in caplog.records if "instance folder" in r.getMessage()]
    assert "cannot make its instance folder" in record.getMessage()
    assert record.exc_info is None  # one line that says what to do, no traceback
