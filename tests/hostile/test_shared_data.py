"""Two tenants on one database or one folder, however it is arranged (DESIGN 4): the tenant
whose app would reach another's data is refused (503, reason logged), and the other tenant's
data is neither read nor written.

What is checked is what the app really ends up using (the engines Flask-SQLAlchemy built, the
folder its files go to), symlinks resolved, not what the tenants file says.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from werkzeug.test import Client

from dispatcher import Dispatcher

HOST = {"Host": "localhost"}
HOSTILE = "tests.apps.hostile"


def tenants(extra: str = "", acme: str = "", globex: str = "") -> str:
    return f"""
        version: 1
        server_names: [localhost]
        defaults: {{app: "{HOSTILE}:ordinary"}}
        tenants:
          acme: {{path: /acme{acme}}}
          globex: {{path: /globex{globex}}}
        {extra}
    """


def uses(database: str, factory: str = "uses_other_database") -> str:
    """A tenant's fields: an app that reaches for ``database`` besides (or instead of) its own."""
    return f', app: "{HOSTILE}:{factory}", config: {{OTHER_DATABASE: "{database}"}}'


def rows(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [text for (text,) in connection.execute("SELECT text FROM row")]


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    return tmp_path / "instance"


def serve(make_dispatcher: Callable[[str], Dispatcher], text: str) -> Client:
    client = Client(make_dispatcher(text))
    # acme writes a row of its own: whoever could reach its database would see it.
    assert client.post("/acme/rows/acme-secret", headers=HOST, buffered=True).status_code == 201
    return client


def assert_refused(client: Client, caplog: pytest.LogCaptureFixture, reason: str) -> None:
    response = client.get("/globex/rows", headers=HOST, buffered=True)
    assert response.status_code == 503
    assert b"acme-secret" not in response.data
    refusals = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "ERROR" and getattr(r, "tenant", "") == "globex"
    ]
    assert any(reason in m for m in refusals), refusals
    assert client.get("/acme/rows", headers=HOST, buffered=True).json == {"rows": ["acme-secret"]}


def prepare(instance: Path, make: Callable[[Path], None]) -> None:
    """Arrange folders before the dispatcher builds anything (as an operator's disk would be)."""
    (instance / "acme").mkdir(parents=True, mode=0o700)
    make(instance)


def test_an_app_that_ignores_its_database_is_refused(
    make_dispatcher: Callable[[str], Dispatcher], instance: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = f"sqlite:///{instance}/acme/app.db"
    client = serve(
        make_dispatcher,
        tenants(
            globex=f', app: "{HOSTILE}:uses_other_database", config: {{OTHER_DATABASE: "{other}"}}'
        ),
    )
    assert_refused(client, caplog, "not the tenant's own")


def test_a_bind_to_another_tenants_database_is_refused(
    make_dispatcher: Callable[[str], Dispatcher], instance: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = f"sqlite:///{instance}/acme/app.db"
    client = serve(
        make_dispatcher,
        tenants(
            globex=f', app: "{HOSTILE}:binds_other_database", config: {{OTHER_DATABASE: "{other}"}}'
        ),
    )
    assert_refused(client, caplog, "not the tenant's own")


def test_an_instance_config_py_cannot_switch_the_database(
    make_dispatcher: Callable[[str], Dispatcher], instance: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def arrange(root: Path) -> None:
        (root / "globex").mkdir(mode=0o700)
        (root / "globex" / "config.py").write_text(
            f"SQLALCHEMY_DATABASE_URI = 'sqlite:///{root}/acme/app.db'\n"
        )

    prepare(instance, arrange)
    assert_refused(serve(make_dispatcher, tenants()), caplog, "not the tenant's own")


@pytest.mark.parametrize("lazy", [False, True])
def test_an_instance_folder_linked_to_another_tenants_is_refused(
    make_dispatcher: Callable[[str], Dispatcher],
    instance: Path,
    caplog: pytest.LogCaptureFixture,
    lazy: bool,
) -> None:
    prepare(instance, lambda root: (root / "globex").symlink_to(root / "acme"))
    flag = ", lazy: true" if lazy else ""
    client = serve(make_dispatcher, tenants(acme=flag, globex=flag))
    assert_refused(client, caplog, "another tenant's folder")


def test_a_database_file_linked_to_another_tenants_is_refused(
    make_dispatcher: Callable[[str], Dispatcher], instance: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def arrange(root: Path) -> None:
        (root / "globex").mkdir(mode=0o700)
        (root / "globex" / "app.db").symlink_to(root / "acme" / "app.db")

    prepare(instance, arrange)
    assert_refused(serve(make_dispatcher, tenants()), caplog, "outside its own instance folder")


def test_two_urls_reaching_one_file_through_a_linked_folder_are_refused(
    make_dispatcher: Callable[[str], Dispatcher],
    instance: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The file names differ, so the tenants file passes `check`; the files are one."""
    (tmp_path / "link").symlink_to(instance / "acme")
    (instance / "acme").mkdir(parents=True, mode=0o700)
    client = serve(
        make_dispatcher,
        tenants(globex=f", database: 'sqlite:///{tmp_path}/link/app.db'"),
    )
    assert_refused(client, caplog, "resolves to")


def test_two_folders_linked_to_one_place_are_both_refused(
    make_dispatcher: Callable[[str], Dispatcher], instance: Path, tmp_path: Path
) -> None:
    """Neither may win: whichever a worker builds first, the other worker could pick the
    other one, and the two tenants would share files."""
    shared = tmp_path / "disk2"
    shared.mkdir(mode=0o700)
    instance.mkdir()
    for name in ("acme", "globex"):
        (instance / name).symlink_to(shared)
    client = Client(make_dispatcher(tenants()))
    for name in ("acme", "globex"):
        assert client.get(f"/{name}/", headers=HOST, buffered=True).status_code == 503


def test_symlinks_that_keep_tenants_apart_are_fine(
    make_dispatcher: Callable[[str], Dispatcher], tmp_path: Path
) -> None:
    """An instance root that is a link, and a tenant's folder moved to another disk."""
    (tmp_path / "real-root").mkdir()
    (tmp_path / "instance").symlink_to(tmp_path / "real-root")
    (tmp_path / "disk2" / "globex").mkdir(parents=True, mode=0o700)
    (tmp_path / "real-root" / "globex").symlink_to(tmp_path / "disk2" / "globex")
    client = serve(make_dispatcher, tenants())
    assert client.post("/globex/rows/g", headers=HOST, buffered=True).status_code == 201
    assert rows(tmp_path / "disk2" / "globex" / "app.db") == ["g"]
    assert rows(tmp_path / "real-root" / "acme" / "app.db") == ["acme-secret"]


def test_an_app_that_uses_another_postgresql_database_is_refused(
    make_dispatcher: Callable[[str], Dispatcher], pg_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql://postgres@127.0.0.1/{pg_prefix}"
    text = f"""
        version: 1
        server_names: [localhost]
        create_databases: true
        defaults: {{app: "{HOSTILE}:ordinary", database: "{url}{{name}}"}}
        tenants:
          acme: {{path: /acme}}
          globex:
            path: /globex
            app: "{HOSTILE}:uses_other_database"
            config: {{OTHER_DATABASE: "postgresql+psycopg://postgres@127.0.0.1/{pg_prefix}acme"}}
    """
    client = serve(make_dispatcher, text)
    assert_refused(client, caplog, "not the tenant's own")


def test_in_memory_sqlite_binds_are_private_and_fine(
    make_dispatcher: Callable[[str], Dispatcher],
) -> None:
    client = Client(
        make_dispatcher(
            tenants(
                globex=f', app: "{HOSTILE}:binds_other_database", config: {{OTHER_DATABASE: "sqlite://"}}'
            )
        )
    )
    assert client.get("/globex/", headers=HOST, buffered=True).status_code == 200
