"""The ``dispatcher.testing`` pytest plugin, run on throwaway pytest projects (``pytester``).

Each project is what an app team has: a small factory-built app package (``shop``, with a
second app ``shop.admin``), a tenants.yaml, and a root conftest.py that enables the plugin with
``pytest_plugins = ["dispatcher.testing"]``. The inner runs happen in this process.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from pathlib import Path

# The inner runs happen in this process, and pytester removes the modules each run imported
# when it ends; SQLAlchemy cannot be imported a second time, so it is imported for good here.
import flask_sqlalchemy  # noqa: F401
import pytest

from tests.conftest import ROOT, postgres, snapshot

with contextlib.suppress(ImportError):  # the same holds for psycopg's C extension
    import psycopg  # noqa: F401

SHOP = '''
"""A factory-built app with one table, as an app team would write it."""
import os

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()


class Item(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    text = db.Column(db.String(80))


def create_app(tenant_config):
    app = Flask(__name__, instance_path=tenant_config.instance_path,
                instance_relative_config=True)
    app.config.from_mapping(SQLALCHEMY_DATABASE_URI=tenant_config.database_uri, GREETING="hello")
    app.config.from_mapping(tenant_config.config)
    app.config.from_pyfile("config.py", silent=True)
    db.init_app(app)

    @app.get("/")
    def index():
        return jsonify(tenant=tenant_config.name, greeting=app.config["GREETING"])

    @app.post("/items")
    def add():
        item = Item(text=request.form["text"])
        db.session.add(item)
        db.session.commit()
        return jsonify(id=item.id), 201

    @app.get("/items")
    def items():
        return jsonify([i.text for i in db.session.scalars(db.select(Item).order_by(Item.id))])

    @app.cli.command("hello")
    def hello():
        print(f"hello from {tenant_config.name}")

    return app


def init_db(app):
    """Create the schema and the SEED_ITEMS rows, and note it in $SCHEMA_LOG: tests count
    how often this runs."""
    db.create_all()
    db.session.add_all([Item(text=text) for text in app.config.get("SEED_ITEMS", ())])
    db.session.commit()
    if os.environ.get("SCHEMA_LOG"):
        with open(os.environ["SCHEMA_LOG"], "a") as f:
            f.write("built\\n")
'''

ADMIN = """
from shop import create_app as make
"""

TENANTS = """
version: 1
base_domain: localhost
server_names: [localhost]
defaults: {app: shop}
tenants:
  acme: {path: /acme, config: {GREETING: hi}}
  globex: {subdomain: globex}
  initech: {path: /initech, app: "shop.admin:make"}
  hooli: {path: /hooli, enabled: false}
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytest project with the ``shop`` app, four tenants and the plugin enabled."""
    pytester.makeini("[pytest]\nfilterwarnings = error\naddopts = -p no:cacheprovider\n")
    pytester.makeconftest('pytest_plugins = ["dispatcher.testing"]')
    (pytester.path / "shop").mkdir()
    (pytester.path / "shop" / "__init__.py").write_text(SHOP)
    (pytester.path / "shop" / "admin.py").write_text(ADMIN)
    write(pytester.path / "tenants.yaml", TENANTS)
    return pytester


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def ids(result: pytest.RunResult) -> list[str]:
    """The node ids the run passed, failed or skipped, in order."""
    return [line.split(" ")[0] for line in result.outlines if "::" in line and " " in line]


# -- options and markers ------------------------------------------------------------------------


def test_help_lists_the_options(project: pytest.Pytester) -> None:
    result = project.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "multi-tenant dispatcher (dispatcher.testing):",
            "  --tenants-file=PATH*",
            "  --tenant=NAME*",
        ]
    )


def test_markers_are_registered_with_their_signature(project: pytest.Pytester) -> None:
    result = project.runpytest("--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.tenants(*names): *", "@pytest.mark.tenant_app(*import_paths): *"]
    )


def test_header_names_the_tenants_file(project: pytest.Pytester) -> None:
    result = project.runpytest("--tenant", "acme")
    result.stdout.fnmatch_lines([f"dispatcher: tenants file {project.path}/tenants.yaml (*acme)"])


# -- parametrization and selection --------------------------------------------------------------


def test_one_test_per_enabled_tenant_with_its_name_as_id(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        def test_home(client, tenant):
            assert client.get("/").json["tenant"] == tenant.name

        @pytest.mark.parametrize("n", [1, 2])
        def test_with_params(tenant, n):
            pass

        def test_plain():
            pass
        """
    )
    result = project.runpytest("-v")
    assert ids(result) == [
        "test_one_test_per_enabled_tenant_with_its_name_as_id.py::test_home[acme]",
        "test_one_test_per_enabled_tenant_with_its_name_as_id.py::test_home[globex]",
        "test_one_test_per_enabled_tenant_with_its_name_as_id.py::test_home[initech]",
        *[
            f"test_one_test_per_enabled_tenant_with_its_name_as_id.py::test_with_params[{t}-{n}]"
            for t in ("acme", "globex", "initech")
            for n in (1, 2)
        ],
        "test_one_test_per_enabled_tenant_with_its_name_as_id.py::test_plain",
    ]
    result.assert_outcomes(passed=10)
    assert "hooli" not in result.stdout.str()  # disabled: not collected, not even skipped


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tenant", "acme"], ["acme"]),
        (["--tenant", "acme", "--tenant", "initech"], ["acme", "initech"]),
        (["-k", "globex"], ["globex"]),
    ],
)
def test_tenant_option_selects(
    project: pytest.Pytester, args: list[str], expected: list[str]
) -> None:
    project.makepyfile("def test_home(client):\n    pass\n\ndef test_plain():\n    pass\n")
    result = project.runpytest("-v", *args)
    tenants = [i.partition("[")[2].rstrip("]") for i in ids(result) if "[" in i]
    assert tenants == expected
    assert "SKIPPED" not in result.stdout.str()  # others are not collected, not skipped


def test_markers_select_tenants(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.tenants("acme", "globex")

        def test_module_marker(tenant):
            pass

        @pytest.mark.tenants("globex", "hooli")   # the closest marker wins; hooli is disabled
        def test_closest(tenant):
            pass

        @pytest.mark.tenants("acme", "globex", "initech")
        @pytest.mark.tenant_app("shop")
        def test_app_module(tenant):
            pass

        @pytest.mark.tenants("acme", "globex", "initech")
        @pytest.mark.tenant_app("shop.admin:make")
        def test_app_factory(tenant):
            pass

        @pytest.mark.tenants("acme", "globex", "initech")
        @pytest.mark.tenant_app("shop.admin")
        def test_app_module_of_factory(tenant):
            pass
        """
    )
    result = project.runpytest("-v")
    assert [i.partition("::")[2] for i in ids(result)] == [
        "test_module_marker[acme]",
        "test_module_marker[globex]",
        "test_closest[globex]",
        "test_app_module[acme]",
        "test_app_module[globex]",
        "test_app_factory[initech]",
        "test_app_module_of_factory[initech]",
    ]


def test_test_left_without_tenant_is_deselected(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.tenants("globex")
        def test_globex(tenant):
            pass

        @pytest.mark.tenants("hooli")
        def test_disabled_only(tenant):
            pass

        @pytest.mark.tenant_app("shop.admin")
        def test_admin(tenant):
            pass
        """
    )
    result = project.runpytest("--tenant", "acme")
    result.assert_outcomes(deselected=3)
    result = project.runpytest()
    result.assert_outcomes(passed=2, deselected=1)


def test_test_parametrizing_tenant_itself_is_left_alone(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("tenant", ["x", "y"])
        def test_own(tenant):
            assert tenant in ("x", "y")

        @pytest.mark.parametrize("tenant", ["globex"], indirect=True)
        def test_indirect(tenant):
            assert tenant.name == "globex"
        """
    )
    result = project.runpytest("-v")
    assert [i.partition("::")[2] for i in ids(result)] == [
        "test_own[x]",
        "test_own[y]",
        "test_indirect[globex]",
    ]
    result.assert_outcomes(passed=3)


def test_failing_tenant_is_named_in_the_report(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        def test_greeting(client):
            assert client.get("/").json["greeting"] == "hello"
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["FAILED test_failing_tenant_is_named_in_the_report.py::test_greeting[[]acme[]] - A*"]
    )


# -- usage errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "args", "message"),
    [
        (
            "@pytest.mark.tenants('acmee')\ndef test_a(tenant): pass",
            [],
            "ERROR: *::test_a: @pytest.mark.tenants: no tenant 'acmee' in */tenants.yaml "
            "(did you mean 'acme'?)",
        ),
        (
            "@pytest.mark.tenant_app('shop.nope')\ndef test_a(tenant): pass",
            [],
            "ERROR: *::test_a: @pytest.mark.tenant_app: app module 'shop.nope' was not found",
        ),
        (
            "@pytest.mark.tenants(['acme'])\ndef test_a(tenant): pass",
            [],
            "ERROR: *::test_a: @pytest.mark.tenants: expected tenants(*names), each a string; "
            "got ([[]'acme'[]],)",
        ),
        (
            "def test_a(client): pass",
            ["--tenant", "acne"],
            "ERROR: dispatcher.testing: --tenant acne: no tenant 'acne' in */tenants.yaml "
            "(did you mean 'acme'?)",
        ),
        (
            "def test_a(client): pass",
            ["--tenant", "hooli"],
            "ERROR: dispatcher.testing: --tenant hooli: tenant 'hooli' is disabled in "
            "*/tenants.yaml; disabled tenants are not tested",
        ),
    ],
    ids=["unknown-tenant-marker", "unknown-app-marker", "bad-marker-args", "unknown", "disabled"],
)
def test_usage_errors(project: pytest.Pytester, source: str, args: list[str], message: str) -> None:
    project.makepyfile(f"import pytest\n\n{source}\n")
    result = project.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_bad_tenants_file_is_a_usage_error_listing_every_problem(project: pytest.Pytester) -> None:
    write(
        project.path / "tenants.yaml",
        """
        version: 1
        tenants:
          acme: {pth: /acme, app: shop}
          globex: {path: /globex, app: shop.nope}
        """,
    )
    project.makepyfile("def test_a(client): pass\n\ndef test_b(dispatcher_client): pass\n")
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: dispatcher.testing: {project.path}/tenants.yaml cannot be used:",
            "*tenants.yaml:3: tenant 'acme', field 'pth': unknown field 'pth' (did you mean "
            "'path'?)*",
            "*tenants.yaml:4: tenant 'globex', field 'app': app module 'shop.nope' was not found*",
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_tenants_file_is_read_only_when_a_test_needs_it(project: pytest.Pytester) -> None:
    write(project.path / "tenants.yaml", "version: 1\ntenants: {acme: {pth: /acme}}\n")
    project.makepyfile("def test_plain(): pass\n")
    project.runpytest().assert_outcomes(passed=1)


def test_missing_tenants_file(project: pytest.Pytester) -> None:
    (project.path / "tenants.yaml").unlink()
    project.makepyfile("def test_a(tenant): pass\n")
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: dispatcher.testing: tenants file {project.path}/tenants.yaml not found. "
            "Pass --tenants-file PATH or set $TENANTS_FILE"
        ]
    )


def test_tenants_file_from_environment_then_option_then_rootdir(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(project.path / "only-acme.yaml", "version: 1\ntenants: {acme: {path: /a, app: shop}}\n")
    write(project.path / "only-b.yaml", "version: 1\ntenants: {b: {path: /b, app: shop}}\n")
    project.makepyfile(test_names="def test_name(tenant): pass\n")

    def tenants(*args: str) -> list[str]:
        result = project.runpytest("-v", *args)
        return [i.partition("[")[2].rstrip("]") for i in ids(result)]

    assert tenants() == ["acme", "globex", "initech"]  # the rootdir's tenants.yaml
    monkeypatch.setenv("TENANTS_FILE", "only-acme.yaml")
    assert tenants() == ["acme"]
    assert tenants("--tenants-file", "only-b.yaml") == ["b"]
    # The default is the rootdir's file, wherever pytest starts; a given path is relative to
    # the current directory.
    monkeypatch.delenv("TENANTS_FILE")
    (project.path / "sub").mkdir()
    monkeypatch.chdir(project.path / "sub")
    assert tenants("..") == ["acme", "globex", "initech"]
    assert tenants("..", "--tenants-file=../only-b.yaml") == ["b"]


# -- fixtures -----------------------------------------------------------------------------------


def test_fixtures(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        from flask import Flask

        def test_app(app, tenant, tmp_path_factory):
            assert isinstance(app, Flask)
            assert app.testing
            assert app.extensions["dispatcher"] == tenant
            assert app.instance_path == tenant.instance_path
            assert tenant.instance_path.startswith(str(tmp_path_factory.getbasetemp()))
            assert tenant.database_uri == f"sqlite:///{tenant.instance_path}/app.db"
            assert len(app.config["SECRET_KEY"]) == 64   # its own, as the dispatcher makes it

        def test_client(client, tenant):
            expected = "hi" if tenant.name == "acme" else "hello"   # acme's config in YAML
            assert client.get("/").json == {"tenant": tenant.name, "greeting": expected}

        def test_runner(runner, tenant):
            assert runner.invoke(args=["hello"]).output == f"hello from {tenant.name}\\n"

        def test_dispatcher_client(dispatcher_client):
            assert dispatcher_client.get("/acme/").json["tenant"] == "acme"
            globex = dispatcher_client.get("/", headers={"Host": "globex.localhost"})
            assert globex.json["tenant"] == "globex"
            assert dispatcher_client.get("/initech/").json["tenant"] == "initech"
            assert dispatcher_client.get("/hooli/").status_code == 404

        def test_dispatcher_client_shares_the_tenant(client, dispatcher_client, tenant):
            client.post("/items", data={"text": "written by client"})
            host = tenant.hosts[0] if tenant.hosts else "localhost"
            url = (tenant.path or "") + "/items"
            assert dispatcher_client.get(url, headers={"Host": host}).json == ["written by client"]
        """
    )
    project.runpytest().assert_outcomes(passed=13)


def test_app_config_overrides_yaml_config(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.fixture
        def app_config():
            return {"GREETING": "from app_config"}

        def test_fixture_override(client):
            assert client.get("/").json["greeting"] == "from app_config"

        @pytest.mark.parametrize("app_config", [{"GREETING": "param"}])
        def test_param_override(app, app_config):
            assert app.config["GREETING"] == "param"

        def test_dispatcher_too(dispatcher_client):
            assert dispatcher_client.get("/acme/").json["greeting"] == "from app_config"
        """
    )
    project.runpytest("--tenant", "acme").assert_outcomes(passed=3)


def test_each_test_gets_a_fresh_database_from_a_schema_built_once(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = project.path / "schema.log"
    monkeypatch.setenv("SCHEMA_LOG", str(log))
    project.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", range(3))
        def test_write(client, n):
            assert client.get("/items").json == []
            assert client.post("/items", data={"text": "x"}).status_code == 201
            assert client.get("/items").json == ["x"]

        def test_read_after(client, tenant):
            assert client.get("/items").json == []
        """
    )
    project.runpytest().assert_outcomes(passed=12)
    # Once per tenant, not per test: acme and globex (initech's shop.admin has no init_db).
    assert log.read_text().splitlines() == ["built"] * 2


def test_dispatcher_client_serves_the_others_when_one_tenant_cannot_be_built(
    project: pytest.Pytester,
) -> None:
    """As in production: a tenant whose factory raises answers 503, and so does one on
    PostgreSQL when psycopg is missing; every other tenant is served (a warning says why)."""
    write(
        project.path / "tenants.yaml",
        """
        version: 1
        defaults: {app: shop}
        tenants:
          acme: {path: /acme}
          broken: {path: /broken, app: "shop.broken"}
          pg: {path: /pg, database: "postgresql+psycopg://postgres@127.0.0.1:5432/never_{name}"}
        """,
    )
    (project.path / "shop" / "broken.py").write_text(
        "def create_app(tenant_config):\n    raise RuntimeError('this factory fails')\n"
    )
    project.makeconftest(
        'import sys\n\nsys.modules["psycopg"] = None\npytest_plugins = ["dispatcher.testing"]\n'
    )
    project.makepyfile(
        """
        def test_whole_dispatcher(dispatcher_client):
            get = lambda path: dispatcher_client.get(path).status_code
            assert (get("/acme/"), get("/broken/"), get("/pg/")) == (200, 503, 503)
        """
    )
    result = project.runpytest("-W", "default::pytest.PytestWarning")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*dispatcher_client: tenant 'broken' answers 503 (*this factory fails*",
            "*dispatcher_client: tenant 'pg' answers 503 (*psycopg is not installed*",
        ]
    )


def test_real_instance_folder_is_untouched(project: pytest.Pytester) -> None:
    write(project.path / "instance" / "acme" / "config.py", 'GREETING = "operator"\n')
    before = snapshot(project.path / "instance")
    project.makepyfile(
        """
        import os

        def test_write(client, tenant):
            assert client.get("/").json["greeting"] != "operator"  # the real config.py is unread
            assert client.post("/items", data={"text": "x"}).status_code == 201
            assert {"app.db", "secret_key"} <= set(os.listdir(tenant.instance_path))

        def test_whole_dispatcher(dispatcher_client):
            assert dispatcher_client.post("/acme/items", data={"text": "x"}).status_code == 201
        """
    )
    project.runpytest().assert_outcomes(passed=4)
    assert snapshot(project.path / "instance") == before


def test_sqlite_file_outside_the_instance_folder_is_redirected(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    shared = tmp_path / "elsewhere" / "shared.db"
    write(
        project.path / "tenants.yaml",
        f"""
        version: 1
        tenants:
          acme: {{path: /acme, app: shop, database: "sqlite:///{shared}"}}
          memory: {{path: /memory, app: shop, database: "sqlite://"}}
        """,
    )
    project.makepyfile(
        """
        import pytest

        def test_where(tenant):
            if tenant.name == "acme":
                assert tenant.database_uri == f"sqlite:///{tenant.instance_path}/shared.db"
            else:
                assert tenant.database_uri == "sqlite://"   # in memory: fresh per app anyway

        @pytest.mark.parametrize("n", range(2))
        def test_fresh(client, n):
            assert client.get("/items").json == []
            client.post("/items", data={"text": "x"})
        """
    )
    project.runpytest().assert_outcomes(passed=6)
    assert not shared.parent.exists()


PG_TENANTS = """
version: 1
tenants:
  acme: {path: /acme, app: shop}
  pg: {path: /pg, app: shop, database: "postgresql+psycopg://postgres@127.0.0.1:5432/pg_{name}"}
"""

PG_TESTS = """
import pytest

@pytest.mark.parametrize("n", range(2))
def test_fresh(client, tenant, n):
    assert client.get("/items").json == []
    client.post("/items", data={"text": "x"})
    assert client.get("/items").json == ["x"]
"""


def test_postgresql_tenant_gets_a_throwaway_database(
    project: pytest.Pytester, pg_prefix: str
) -> None:
    """A throwaway database on the tenant's server, as a new tenant's for every test; none
    left after the session, and the configured database never created."""
    write(project.path / "tenants.yaml", PG_TENANTS.replace("pg_{name}", f"{pg_prefix}{{name}}"))
    used = project.path / "used.txt"
    project.makepyfile(
        PG_TESTS
        + f"""
@pytest.mark.tenants("pg")
@pytest.mark.parametrize("n", range(2))
def test_database(tenant, n):
    prefix = "postgresql+psycopg://postgres@127.0.0.1:5432/dispatcher_test_"
    assert tenant.database_uri.startswith(prefix)   # never the configured one
    with open({str(used)!r}, "a") as f:
        f.write(tenant.database_uri.rpartition("/")[2] + "\\n")
"""
    )
    project.runpytest().assert_outcomes(passed=6)
    names = [*sorted(set(used.read_text().split())), f"{pg_prefix}pg"]
    with postgres() as connection:
        left = connection.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)", [names]
        ).fetchall()
    assert left == []


def test_a_database_named_in_the_urls_query_is_never_the_one_tested_on(
    project: pytest.Pytester, pg_prefix: str
) -> None:
    """``?dbname=`` and ``?host=`` spellings, which tenants.yaml accepts: the throwaway
    database replaces the one named in the query too (the driver would prefer the query's)."""
    real = {"q": f"{pg_prefix}by_query", "h": f"{pg_prefix}by_host"}
    with postgres() as connection:
        for name in real.values():
            connection.execute(f'CREATE DATABASE "{name}"')
    write(
        project.path / "tenants.yaml",
        f"""
        version: 1
        defaults: {{app: shop}}
        tenants:
          q: {{path: /q, database: "postgresql+psycopg://postgres@127.0.0.1:5432/x?dbname={real["q"]}"}}
          h: {{path: /h, database: "postgresql+psycopg:///{real["h"]}?host=127.0.0.1&user=postgres"}}
        """,
    )
    project.makepyfile(PG_TESTS)
    project.runpytest().assert_outcomes(passed=4)
    for name in real.values():  # nothing was created there, let alone written
        with postgres(name) as connection:
            tables = connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        assert tables == [], name


def test_postgresql_tenant_is_skipped_without_psycopg(project: pytest.Pytester) -> None:
    write(project.path / "tenants.yaml", PG_TENANTS)
    # sys.modules is restored after the in-process run.
    project.makeconftest(
        'import sys\n\nsys.modules["psycopg"] = None\npytest_plugins = ["dispatcher.testing"]\n'
    )
    project.makepyfile(PG_TESTS)
    result = project.runpytest("-rs")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [[]2[]] *: tenant 'pg' uses PostgreSQL and psycopg is not installed: "
            "pip install 'psycopg[[]binary[]]' to test it on a throwaway database"
        ]
    )


# -- what a test leaves behind, no later test sees ----------------------------------------------


def lite_and_pg(project: pytest.Pytester, prefix: str) -> None:
    """One SQLite and one PostgreSQL tenant of the shop app, each seeded with one item."""
    write(
        project.path / "tenants.yaml",
        f"""
        version: 1
        defaults: {{app: shop, config: {{SEED_ITEMS: [seed]}}}}
        tenants:
          lite: {{path: /lite}}
          pg: {{path: /pg, database: "postgresql+psycopg://postgres@127.0.0.1:5432/{prefix}{{name}}"}}
        """,
    )


LEFT_BEHIND = '''
import os
import sqlite3

import psycopg
import pytest
from sqlalchemy import text

from shop import Item, db

leaked = {}
built = {}


def items(client):
    return client.get("/items").json


def test_commits_rows_in_every_way(client, app):
    assert items(client) == ["seed"]
    client.post("/items", data={"text": "by a request"})
    with app.app_context():
        db.session.add(Item(text="by the session"))
        db.session.commit()
        with db.engine.begin() as connection:  # a connection of its own
            connection.execute(text("INSERT INTO item (text) VALUES ('by the engine')"))
    assert len(items(client)) == 4


def test_sees_none_of_them(client):
    assert items(client) == ["seed"]


@pytest.mark.parametrize("n", range(2))
def test_ids_restart_as_in_a_new_tenant(client, n):
    assert client.post("/items", data={"text": "a"}).json == {"id": 2}  # the seed is 1
    assert client.post("/items", data={"text": "b"}).json == {"id": 3}


def test_changes_and_deletes_the_seed_rows(app):
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(text("UPDATE item SET text = 'changed'"))
        connection.execute(text("INSERT INTO item (text) VALUES ('more')"))
        connection.execute(text("DELETE FROM item WHERE id = 1"))


def test_finds_the_seed_rows_as_built(client):
    assert items(client) == ["seed"]


def test_changes_the_config(app, tenant):
    tenant.config["SEED_ITEMS"].append("appended to the tenant's")
    app.config["GREETING"] = "changed"
    app.config["NEW_KEY"] = 1
    app.config["SEED_ITEMS"].append("appended in place")
    del app.config["TESTING"]


def test_finds_the_config_as_built(app, client, tenant):
    assert client.get("/").json["greeting"] == "hello"
    assert "NEW_KEY" not in app.config
    assert app.config["SEED_ITEMS"] == ["seed"] and app.testing
    assert tenant.config["SEED_ITEMS"] == ["seed"]


@pytest.mark.parametrize("app_config", [{"OTHER": 1}])
def test_an_app_of_another_config_finds_it_as_written_too(app, tenant):
    assert tenant.config["SEED_ITEMS"] == ["seed"] and app.config["SEED_ITEMS"] == ["seed"]


def test_adds_a_route(app, client):
    # As on a new app, though earlier tests made requests to the tenant's app.
    app.add_url_rule("/extra", "extra", lambda: "extra")
    assert client.get("/extra").data == b"extra"


def test_does_not_have_that_route(client):
    assert client.get("/extra").status_code == 404


def test_changes_the_app_in_place(app):
    app.view_functions["items"] = lambda: "replaced"
    app.jinja_env.globals["leaked"] = "leaked"
    app.json.sort_keys = False
    app.url_map.strict_slashes = False


def test_finds_the_app_as_built(app, client):
    assert client.get("/items").json == ["seed"]
    assert "leaked" not in app.jinja_env.globals
    assert app.json.sort_keys and app.url_map.strict_slashes


def test_leaves_a_connection_open_in_a_transaction(tenant):
    """A driver connection of its own, a write committed, then locks held and never let go."""
    if tenant.name == "lite":
        connection = sqlite3.connect(tenant.database_uri.removeprefix("sqlite:///"))
        connection.execute("INSERT INTO item (text) VALUES ('raw')")
        connection.commit()
        connection.execute("BEGIN IMMEDIATE")  # the write lock
    else:
        connection = psycopg.connect(tenant.database_uri.replace("+psycopg", ""))
        connection.execute("INSERT INTO item (text) VALUES ('raw')")
        connection.commit()
        connection.execute("LOCK TABLE item IN ACCESS EXCLUSIVE MODE")
    connection.execute("INSERT INTO item (text) VALUES ('uncommitted')")
    leaked[tenant.name] = connection


def test_is_neither_blocked_nor_reached_by_it(client, tenant):
    assert items(client) == ["seed"]
    assert client.post("/items", data={"text": "mine"}).status_code == 201  # not locked out
    connection = leaked.pop(tenant.name)
    try:  # SQLite: it writes into the file the last test had; PostgreSQL: it was closed
        connection.execute("INSERT INTO item (text) VALUES ('late')")
        connection.commit()
    except (sqlite3.Error, psycopg.Error):
        pass
    finally:
        connection.close()
    assert items(client) == ["seed", "mine"]


def test_fails_in_the_middle_of_a_transaction(app):
    with app.app_context():
        db.session.add(Item(text="never committed"))
        db.session.flush()
        raise RuntimeError("the test fails here")


def test_after_a_failure(client):
    assert items(client) == ["seed"]
    assert client.post("/items", data={"text": "x"}).json == {"id": 2}


def test_changes_the_schema(app):
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(text("ALTER TABLE item ADD COLUMN extra INTEGER"))
        connection.execute(text("CREATE TABLE other (id INTEGER PRIMARY KEY)"))


def test_finds_the_schema_as_built(app, client):
    with app.app_context(), db.engine.connect() as connection:
        columns = connection.execute(text("SELECT * FROM item")).keys()
        assert list(columns) == ["id", "text"]
    assert items(client) == ["seed"]


def test_alters_a_sequence(app, tenant):
    if tenant.name == "pg":  # (SQLite has none)
        with app.app_context(), db.engine.begin() as connection:
            connection.execute(text("ALTER SEQUENCE item_id_seq INCREMENT BY 10"))


def test_finds_the_sequence_as_built(client):
    assert client.post("/items", data={"text": "a"}).json == {"id": 2}  # the seed is 1
    assert client.post("/items", data={"text": "b"}).json == {"id": 3}


def test_writes_into_the_instance_folder(tenant):
    folder = tenant.instance_path
    with open(os.path.join(folder, "secret_key")) as f:
        built[tenant.name] = (sorted(os.listdir(folder)), f.read())
    os.makedirs(os.path.join(folder, "uploads"))
    with open(os.path.join(folder, "uploads", "a.txt"), "w") as f:
        f.write("upload")
    with open(os.path.join(folder, "secret_key"), "w") as f:
        f.write("x" * 64)
    os.chmod(folder, 0o777)


def test_finds_the_instance_folder_as_built(tenant):
    folder = tenant.instance_path
    assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    with open(os.path.join(folder, "secret_key")) as f:
        assert (sorted(os.listdir(folder)), f.read()) == built[tenant.name]
'''


def test_nothing_a_test_leaves_behind_reaches_the_next(
    project: pytest.Pytester, pg_prefix: str
) -> None:
    """Rows committed in any way, sequences, seed rows, the config, routes, connections left
    open with locks held, a failure mid-transaction, a schema change, instance files: on
    SQLite and PostgreSQL alike, the next test finds the tenant as a new tenant's."""
    lite_and_pg(project, pg_prefix)
    project.makepyfile(test_left_behind=LEFT_BEHIND)
    result = project.runpytest()
    result.assert_outcomes(passed=2 * 22, failed=2)
    result.stdout.fnmatch_lines(["FAILED *::test_fails_in_the_middle_of_a_transaction[[]lite[]]*"])
    with postgres() as connection:  # the configured database is never touched
        assert not connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [f"{pg_prefix}pg"]
        ).fetchone()


def test_each_check_passes_alone(project: pytest.Pytester, pg_prefix: str) -> None:
    """The tests that check a fresh state pass with nothing before them too."""
    lite_and_pg(project, pg_prefix)
    project.makepyfile(test_left_behind=LEFT_BEHIND)
    for name, tests in [
        ("test_sees_none_of_them", 2),
        ("test_ids_restart_as_in_a_new_tenant", 4),
        ("test_finds_the_seed_rows_as_built", 2),
        ("test_does_not_have_that_route", 2),
        ("test_after_a_failure", 2),
    ]:
        project.runpytest("-k", name).assert_outcomes(passed=tests)


# -- a test's app reaches its throwaway database only --------------------------------------------

ROGUE = '''
from shop import create_app as shop_app


def create_app(tenant_config):
    """Ignores the database it is given: a test must never run on this one."""
    app = shop_app(tenant_config)
    app.config["SQLALCHEMY_BINDS"] = {}
    app.extensions.pop("sqlalchemy")
    from shop import db
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///{real}"
    db.init_app(app)
    return app
'''


@pytest.mark.parametrize(
    "how",
    [
        "defaults-config",
        "tenant-config",
        "app-config",
        "binds",
        "connect-args",
        "creator",
        "factory",
    ],
)
def test_an_app_that_could_reach_a_real_database_fails_its_tests(
    project: pytest.Pytester, tmp_path: Path, how: str
) -> None:
    """Whether the database comes from the tenants file's config, the app_config fixture or
    the factory itself, the test fails naming why, and the real database is never created."""
    real = tmp_path / "real" / "production.db"
    real.parent.mkdir()
    uri = f"sqlite:///{real}"
    config = {
        "defaults-config": ("defaults: {app: shop, config: {SQLALCHEMY_DATABASE_URI: '%s'}}", ""),
        "tenant-config": ("defaults: {app: shop}", "config: {SQLALCHEMY_DATABASE_URI: '%s'}"),
        "app-config": ("defaults: {app: shop}", ""),
        "binds": ("defaults: {app: shop}", ""),
        "connect-args": ("defaults: {app: shop}", ""),
        "creator": ("defaults: {app: shop}", ""),
        "factory": ("defaults: {app: shop.rogue}", ""),
    }[how]
    defaults, extra = (part.replace("%s", uri) for part in config)
    write(
        project.path / "tenants.yaml",
        f"version: 1\n{defaults}\ntenants:\n  acme: {{path: /acme, {extra}}}\n".replace(", }", "}"),
    )
    (project.path / "shop" / "rogue.py").write_text(ROGUE.replace("{real}", str(real)))
    app_config = {
        "app-config": {"SQLALCHEMY_DATABASE_URI": uri},
        "binds": {"SQLALCHEMY_BINDS": {"audit": uri}},
        # (On PostgreSQL, connect_args override the URL's database.)
        "connect-args": {"SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"timeout": 1}}},
    }.get(how, {})
    source = repr(app_config)
    if how == "creator":  # a function: no tenants file can hold one, a fixture can
        connect = f'lambda: __import__("sqlite3").connect({str(real)!r})'
        source = f'{{"SQLALCHEMY_ENGINE_OPTIONS": {{"creator": {connect}}}}}'
    project.makepyfile(
        f"""
        import pytest

        @pytest.fixture
        def app_config():
            return {source}

        def test_write(client):
            client.post("/items", data={{"text": "must not reach production.db"}})

        def test_tenant_only(tenant):
            pass
        """
    )
    result = project.runpytest()
    output = result.stdout.str() + result.stderr.str()
    assert result.ret != pytest.ExitCode.OK
    assert "passed" not in output.splitlines()[-1]
    key = {"binds": "SQLALCHEMY_BINDS", "connect-args": "connect_args", "creator": "creator"}.get(
        how, "SQLALCHEMY_DATABASE_URI"
    )
    if how == "factory":
        result.stdout.fnmatch_lines(
            ["*IsolationError*: its app uses the SQLite file *production.db, not the tenant's own*"]
        )
    else:
        assert key in output
    assert not real.exists()  # nothing was written, not even an empty file


# -- reuse, and opting out ----------------------------------------------------------------------


def test_fresh_app_marker_builds_an_app_for_that_test_alone(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        apps = []

        def test_first(app):
            apps.append(app)

        def test_reused(app, tenant):
            assert app is apps[0] and app.extensions["dispatcher"] == tenant

        @pytest.mark.fresh_app
        def test_fresh(app, client, tenant):
            assert app is not apps[0]
            assert app.extensions["dispatcher"] == tenant
            assert client.get("/items").json == []   # on the same throwaway database
            client.post("/items", data={"text": "x"})

        def test_reused_again(app, client):
            assert app is apps[0]
            assert client.get("/items").json == []
        """
    )
    project.runpytest("--tenant", "acme").assert_outcomes(passed=4)


def test_fresh_app_for_a_whole_suite(project: pytest.Pytester) -> None:
    """The conftest.py recipe of docs/testing.md."""
    project.makeconftest(
        """
        pytest_plugins = ["dispatcher.testing"]

        def pytest_collection_modifyitems(items):
            for item in items:
                item.add_marker("fresh_app")
        """
    )
    project.makepyfile(
        """
        import pytest

        apps = set()

        @pytest.mark.parametrize("n", range(3))
        def test_app(app, n):
            assert app not in apps
            apps.add(app)
        """
    )
    project.runpytest("--tenant", "acme").assert_outcomes(passed=3)


def test_a_failed_tests_app_is_not_reused(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        apps = []

        def test_fails(app):
            apps.append(app)
            assert False

        def test_next(app, client):
            assert app is not apps[0]
            assert client.get("/").json["tenant"] == "acme"
        """
    )
    project.runpytest("--tenant", "acme").assert_outcomes(passed=1, failed=1)


# -- PostgreSQL: two sessions at once -----------------------------------------------------------

PARALLEL_CONFTEST = '''
import os
import time
from pathlib import Path

import pytest

pytest_plugins = ["dispatcher.testing"]


@pytest.fixture(scope="session", autouse=True)
def meet_the_other_session():
    """Both sessions hold their databases at the same time: each waits for the other."""
    here, there = Path(os.environ["ME"]), Path(os.environ["OTHER"])
    here.write_text("ready")
    deadline = time.monotonic() + 60
    while not there.exists():
        assert time.monotonic() < deadline, "the other session never started"
        time.sleep(0.05)
'''

PARALLEL_TESTS = """
import os

import pytest


@pytest.mark.parametrize("n", range(15))
def test_own_rows_only(client, tenant, n):
    me = os.environ["ME"]
    with open(me + ".databases", "a") as f:
        f.write(tenant.database_uri.rpartition("/")[2] + "\\n")
    session = os.path.basename(me)
    assert client.get("/items").json == []
    assert client.post("/items", data={"text": session}).json == {"id": 1}
    assert client.get("/items").json == [session]
"""


def test_two_sessions_at_once_on_one_server_never_collide(
    project: pytest.Pytester, pg_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        project.path / "tenants.yaml",
        f"""
        version: 1
        tenants:
          pg: {{path: /pg, app: shop, database: "postgresql+psycopg://postgres@127.0.0.1:5432/{pg_prefix}pg"}}
        """,
    )
    project.makeconftest(PARALLEL_CONFTEST)
    project.makepyfile(test_parallel=PARALLEL_TESTS)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    runs = []
    for me, other in (("a", "b"), ("b", "a")):
        monkeypatch.setenv("ME", str(project.path / me))
        monkeypatch.setenv("OTHER", str(project.path / other))
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        runs.append(project.popen(command, stdin=subprocess.DEVNULL))
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, out.decode() + err.decode()
        assert b"15 passed" in out
    used = {me: set((project.path / f"{me}.databases").read_text().split()) for me in ("a", "b")}
    assert used["a"] and used["b"] and not used["a"] & used["b"]
    with postgres() as connection:
        left = connection.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
            [sorted(used["a"] | used["b"])],
        ).fetchall()
    assert left == []  # each session dropped its own
