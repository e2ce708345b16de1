"""The ``dispatcher.testing`` pytest plugin, run on throwaway pytest projects (``pytester``).

Each project is what an app team has: a small factory-built app package (``shop``, with a
second app ``shop.admin``), a tenants.yaml, and a root conftest.py that enables the plugin with
``pytest_plugins = ["dispatcher.testing"]``. The inner runs happen in this process.
"""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

# The inner runs happen in this process, and pytester removes the modules each run imported
# when it ends; SQLAlchemy cannot be imported a second time, so it is imported for good here.
import flask_sqlalchemy  # noqa: F401
import pytest

from tests.conftest import snapshot

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
        db.session.add(Item(text=request.form["text"]))
        db.session.commit()
        return "", 201

    @app.get("/items")
    def items():
        return jsonify([i.text for i in db.session.scalars(db.select(Item))])

    @app.cli.command("hello")
    def hello():
        print(f"hello from {tenant_config.name}")

    return app


def init_db(app):
    """Create the schema, and note it in $SCHEMA_LOG: tests count how often this runs."""
    db.create_all()
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


def test_postgresql_tenant_gets_a_throwaway_database(project: pytest.Pytester) -> None:
    """A throwaway database on the tenant's server, as a new tenant's for every test; none
    left after the session."""
    psycopg = pytest.importorskip("psycopg")  # in requirements.txt: never skipped in CI
    write(project.path / "tenants.yaml", PG_TENANTS)
    project.makepyfile(
        PG_TESTS
        + """
@pytest.mark.tenants("pg")
@pytest.mark.parametrize("n", range(2))
def test_database(tenant, n):
    prefix = "postgresql+psycopg://postgres@127.0.0.1:5432/dispatcher_test_"
    assert tenant.database_uri.startswith(prefix)   # never pg_pg, the configured one
"""
    )
    project.runpytest().assert_outcomes(passed=6)
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres") as connection:
        names = [row[0] for row in connection.execute("SELECT datname FROM pg_database")]
    assert [n for n in names if n.startswith("dispatcher_test_") or n == "pg_pg"] == []


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
