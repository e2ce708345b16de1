"""tenants.yaml as its users rely on it (DESIGN §3, §9, §10): what a valid file gives, and the
one clear line each bad input gets (file, line, tenant, field, how to fix it)."""

# ruff: noqa: E501  (the table of bad inputs reads best one case per line)

from __future__ import annotations

import dataclasses
import importlib
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher import ConfigError, Problem, TenantSet, check_tenants, load_tenants


class Files:
    """A tmp folder holding a tenants file and a uniquely named app package beside it.

    In the YAML text, ``demoapp`` stands for the package (with modules ``notes`` and
    ``tasks``) and ``@DIR@`` for the folder.
    """

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.pkg = f"demoapp_{uuid.uuid4().hex[:10]}"
        for module in ("__init__", "notes", "tasks"):
            (folder / self.pkg).mkdir(exist_ok=True)
            (folder / self.pkg / f"{module}.py").write_text("")
        importlib.invalidate_caches()

    def write(self, text: str, name: str = "tenants.yaml") -> Path:
        path = self.dir / name
        text = textwrap.dedent(text).replace("demoapp", self.pkg).replace("@DIR@", str(self.dir))
        path.write_text(text)
        return path

    def load(self, text: str, **environ: str) -> TenantSet:
        return load_tenants(self.write(text), environ=environ)

    def errors(self, text: str, **environ: str) -> list[Problem]:
        with pytest.raises(ConfigError) as info:
            self.load(text, **environ)
        return info.value.problems


def files_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Files]:
    """The loader puts the tenants file's folder on sys.path and find_spec imports parent
    packages: undo both, so no test depends on another."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    files = Files(tmp_path)
    yield files
    for name in [m for m in sys.modules if m == files.pkg or m.startswith(files.pkg + ".")]:
        del sys.modules[name]
    sys.path_importer_cache.pop(str(tmp_path), None)


files = pytest.fixture(files_fixture)

#: Five lines; the first line of a ``T()`` body is line 6 of the file.
HEAD = """\
version: 1
base_domain: localhost
server_names: [localhost]
defaults: {app: demoapp}
tenants:
"""


def T(body: str) -> str:
    """A file of HEAD and these tenants (body line 1 = file line 6)."""
    return HEAD + textwrap.indent(textwrap.dedent(body).strip("\n"), "  ") + "\n"


# -- 1. valid files ---------------------------------------------------------------------------

DESIGN_EXAMPLE = """\
    version: 1
    base_domain: localhost
    instance_root: instance
    proxy: {x_for: 1, x_proto: 1, x_host: 1, x_prefix: 0}
    defaults:
      app: demoapp.notes
      mount: path
      database: sqlite:///{instance_path}/app.db
      lazy: false
      config: {NOTES_PER_PAGE: 20, SITE_NAME: Default}
    tenants:
      acme:
        path: /acme
        config: {SITE_NAME: Acme}
      globex:
        subdomain: globex
        hosts: [globex.com]
        app: demoapp.tasks
        database: ${GLOBEX_DATABASE_URL}
      initech: {maintenance: true}
      hooli: {enabled: false}
"""
GLOBEX_DB = "postgresql://globex:pw@db.example.com/globex"


def test_design_example_loads(files: Files) -> None:
    tenant_set = files.load(DESIGN_EXAMPLE, GLOBEX_DATABASE_URL=GLOBEX_DB)
    acme, globex, initech, hooli = (tenant_set[n] for n in ("acme", "globex", "initech", "hooli"))
    assert [t.name for t in tenant_set] == ["acme", "globex", "initech", "hooli"]
    assert [t.name for t in tenant_set.enabled] == ["acme", "globex", "initech"]
    for t in tenant_set:
        assert t.instance_path == str(files.dir / "instance" / t.name)
    assert acme.app == initech.app == f"{files.pkg}.notes"
    assert globex.app == f"{files.pkg}.tasks"
    assert acme.database_uri == f"sqlite:///{files.dir}/instance/acme/app.db"
    # A URL that names no PostgreSQL driver gets psycopg (3), the one this project installs.
    assert globex.database_uri == GLOBEX_DB.replace("postgresql:", "postgresql+psycopg:")
    assert dict(acme.config) == {"NOTES_PER_PAGE": 20, "SITE_NAME": "Acme"}
    # A PostgreSQL tenant's pool settings (small defaults) reach Flask-SQLAlchemy via config.
    assert dict(globex.config) == {
        "NOTES_PER_PAGE": 20,
        "SITE_NAME": "Default",
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "pool_size": 2,
            "max_overflow": 3,
            "pool_pre_ping": True,
            "pool_recycle": 1800,
            "pool_timeout": 10,
        },
    }
    assert (acme.mount, acme.path, acme.hosts) == ("/acme", "/acme", ())
    assert (globex.mount, globex.path) == (("globex.localhost", "globex.com"), None)
    assert (initech.mount, hooli.mount) == ("/initech", "/hooli")
    assert (initech.maintenance, acme.maintenance) == (300, None)
    assert not hooli.enabled and not acme.lazy
    assert tenant_set.base_domain == "localhost"
    assert tenant_set.proxy is not None and tenant_set.proxy.x_host == 1


def test_mount_defaults_maintenance_and_lazy(files: Files) -> None:
    tenant_set = files.load(
        """
        version: 1
        base_domain: example.com
        server_names: [app.example.com]
        defaults: {app: demoapp, mount: subdomain, lazy: true}
        tenants:
          acme: {}
          globex: {maintenance: {retry_after: 60}, lazy: false}
          initech: {path: /eu/initech, maintenance: false}
          hooli:
        """
    )
    acme, globex, initech, hooli = tenant_set
    assert acme.mount == ("acme.example.com",) and acme.lazy
    assert globex.maintenance == 60 and not globex.lazy
    assert initech.mount == "/eu/initech" and initech.maintenance is None
    # `hooli:` with no value takes everything from defaults
    assert (hooli.app, hooli.mount, hooli.enabled) == (files.pkg, ("hooli.example.com",), True)
    assert tenant_set.server_names == frozenset({"app.example.com"})


@pytest.mark.parametrize(
    "database, expected",
    [
        ("sqlite:///{instance_path}/app.db", "sqlite:///@DIR@/instance/acme/app.db"),
        ("sqlite:///app.db", "sqlite:///@DIR@/instance/acme/app.db"),
        ("sqlite:///data/{name}.db", "sqlite:///@DIR@/instance/acme/data/acme.db"),
        ("postgresql://u@db.example.com/{name}", "postgresql+psycopg://u@db.example.com/acme"),
        ("postgresql+psycopg2://u@h/{name}", "postgresql+psycopg2://u@h/acme"),
        ("${DB_URL:-sqlite:///fallback.db}", "sqlite:///@DIR@/instance/acme/fallback.db"),
    ],
    ids=["instance_path", "relative-sqlite", "name", "postgres-name", "driver-kept", "env-default"],
)
def test_database_uri(files: Files, database: str, expected: str) -> None:
    tenant_set = files.load(T(f"acme: {{path: /acme, database: '{database}'}}"))
    assert tenant_set["acme"].database_uri == expected.replace("@DIR@", str(files.dir))


def test_tenant_config_is_frozen_read_only_and_not_shared(files: Files) -> None:
    tenant_set = files.load(
        """
        version: 1
        server_names: [localhost]
        defaults:
          app: demoapp
          mount: path
          config: {ITEMS: [1], NESTED: {a: 1}, KEEP: d}
        tenants:
          acme: {config: {KEEP: acme}}
          globex:
        """
    )
    acme, globex = tenant_set
    with pytest.raises(dataclasses.FrozenInstanceError):
        acme.name = "globex"  # type: ignore[misc]
    with pytest.raises(TypeError):
        acme.config["KEEP"] = "x"  # type: ignore[index]
    acme.config["ITEMS"].append(2)
    acme.config["NESTED"]["a"] = 2
    assert globex.config == {"ITEMS": [1], "NESTED": {"a": 1}, "KEEP": "d"}
    assert acme.config["KEEP"] == "acme"


# -- 2. bad input: one clear problem each -----------------------------------------------------


def case(
    id: str,
    text: str,
    line: int,
    tenant: str | None,
    field: str | None,
    *words: str,
    marks: object = (),
) -> object:
    return pytest.param(text, line, tenant, field, words, id=id, marks=marks)


PATH_CASES = [
    ("no-leading-slash", "acme", "start with '/'"),
    ("trailing-slash", "/acme/", "end with '/'"),
    ("upper-case", "/Acme", "lower-case"),
    ("dotdot-segment", "/a/../b", ".."),
    ("dot-segment", "/a/./b", "'.'"),
    ("empty-segment", "/a//b", "//"),
    ("space", "'/a b'", "characters"),
    ("percent", "/a%20b", "characters"),
    ("root", "/", "root"),
    ("reserved", "/_dispatcher", "reserved"),
    ("under-reserved", "/_dispatcher/x", "reserved"),
]
HOST_CASES = [
    ("port", "'a.com:8080'", "port"),
    ("scheme", "'http://a.com'", "scheme"),
    ("wildcard", "'*.a.com'", "wildcard"),
    ("invalid", "a_b.com", "not a valid host"),
]
NAME_CASES = [
    ("uppercase", "Acme"),
    ("underscore", "a_b"),
    ("leading-dash", "-ab"),
    ("64-chars", "a" * 64),
]

BAD = [
    # YAML and the top level
    case("yaml-syntax", "version: 1\ntenants:\n  a:\n    path: /a\n   app: x\n", 5, None, "", "invalid yaml"),
    case("empty-file", "", 1, None, "", "empty"),
    case("comments-only", "# nothing\n", 1, None, "", "empty"),
    case("top-level-list", "- version\n- tenants\n", 1, None, "", "mapping"),
    case("missing-version", "tenants:\n  a: {path: /a, app: demoapp}\n", 1, None, "version", "missing"),
    case("version-2", "version: 2\ntenants:\n  a: {path: /a, app: demoapp}\n", 1, None, "version", "version 2"),
    case("version-yes", "version: yes\ntenants:\n  a: {path: /a, app: demoapp}\n", 1, None, "version", "version yes (YAML reads it as true)", "the number 1"),
    case("version-quoted", "version: '1'\ntenants:\n  a: {path: /a, app: demoapp}\n", 1, None, "version", "version '1'"),
    case("version-float", "version: 1.0\ntenants:\n  a: {path: /a, app: demoapp}\n", 1, None, "version", "version 1.0"),
    case("missing-tenants", "version: 1\nserver_names: [localhost]\n", 1, None, "tenants", "tenants"),
    case("tenants-not-mapping", "version: 1\ntenants: [a, b]\n", 2, None, "tenants", "mapping"),
    case("unknown-top-level-key", "version: 1\nsever_names: [x]\ntenants:\n  a: {path: /a, app: demoapp}\n",
         2, None, "sever_names", "unknown", "did you mean 'server_names'"),
    case("unknown-tenant-key", T("acme:\n  pth: /acme"), 7, "acme", "pth", "unknown", "did you mean 'path'"),
    case("unknown-defaults-key",
         "version: 1\nserver_names: [x]\ndefaults:\n  app: demoapp\n  lazzy: true\ntenants:\n  a: {path: /a}\n",
         5, None, "defaults.lazzy", "unknown", "did you mean 'lazy'"),
    case("unknown-proxy-key", "version: 1\nproxy:\n  x_for: 1\n  x_forwarded: 1\ntenants:\n  a: {path: /a, app: demoapp}\n",
         4, None, "proxy.x_forwarded", "unknown", "x_for"),
    case("duplicate-key-in-tenant", T("acme:\n  path: /a\n  path: /b"), 8, "acme", "path", "duplicate", "line 7"),
    case("duplicate-tenant", T("acme: {path: /a}\nb: {path: /b}\nacme: {path: /c}"), 8, "acme", "", "duplicate", "line 6"),
    case("duplicate-top-level-key", "version: 1\nserver_names: [x]\nversion: 1\ntenants:\n  a: {path: /a, app: demoapp}\n",
         3, None, "version", "duplicate", "line 1"),
    # tenant names
    *[case(f"name-{id}", T(f"{name}: {{path: /a}}"), 6, name, "", "not a valid tenant name") for id, name in NAME_CASES],
    case("name-yaml-boolean", T("no: {path: /a}"), 6, "no", "", "quote"),
    # types (YAML 1.1 surprises included)
    case("app-yaml-boolean", T("a: {path: /a, app: no}"), 6, "a", "app", "text", "quote it: 'no'"),
    case("path-yaml-boolean", T("a: {path: on}"), 6, "a", "path", "text", "quote it: 'on'"),
    case("hosts-entry-not-text", T("a:\n  hosts: [a.com, 1]"), 7, "a", "hosts", "text"),
    case("hosts-not-a-list", T("a:\n  hosts: a.com"), 7, "a", "hosts", "list"),
    case("lazy-maybe", T("a: {path: /a, lazy: maybe}"), 6, "a", "lazy", "true or false"),
    case("enabled-quoted-yes", T("a: {path: /a, enabled: 'yes'}"), 6, "a", "enabled", "true or false"),
    case("maintenance-soon", T("a:\n  path: /a\n  maintenance: soon"), 8, "a", "maintenance", "soon"),
    case("maintenance-retry-after-0", T("a:\n  path: /a\n  maintenance: {retry_after: 0}"), 8, "a", "maintenance", "greater than 0"),
    case("config-not-mapping", T("a:\n  path: /a\n  config: [1, 2]"), 8, "a", "config", "mapping"),
    case("config-key-not-text", T("a:\n  path: /a\n  config:\n    X: 1\n    1: x"), 10, "a", "config", "key 1", "text"),
    case("unknown-yaml-tag", T("a:\n  path: !foo /a"), 7, "a", "path", "!foo"),
    # mounts
    case("mount-host", T("a: {mount: host}"), 6, "a", "mount", "'path' or 'subdomain'"),
    case("no-mount", "version: 1\ntenants:\n  a:\n    app: demoapp\n", 3, "a", "mount", "mount"),
    case("path-and-hosts", T("a:\n  path: /a\n  hosts: [a.com]"), 7, "a", "path", "path", "host"),
    case("hosts-empty", T("a:\n  lazy: true\n  hosts: []"), 8, "a", "hosts", "hosts"),
    case("subdomain-without-base-domain", "version: 1\ntenants:\n  a:\n    app: demoapp\n    subdomain: a\n",
         5, "a", "subdomain", "base_domain"),
    case("subdomain-invalid", T("a:\n  subdomain: a_b"), 7, "a", "subdomain", "not a valid subdomain"),
    *[case(f"path-{id}", T(f"a:\n  path: {path}"), 7, "a", "path", word) for id, path, word in PATH_CASES],
    case("path-duplicate", T("a:\n  path: /x\nb:\n  path: /x"), 9, "b", "path", "duplicate", "'a'"),
    case("path-duplicate-of-default", T("b:\n  path: /a\na: {}").replace("{app: demoapp}", "{app: demoapp, mount: path}"),
         8, "a", "path", "duplicate", "'/a'"),
    case("path-nested-parent-first", T("a:\n  path: /a\nb:\n  path: /a/b"), 9, "b", "path", "inside", "'/a'"),
    case("path-nested-child-first", T("b:\n  path: /a/b\na:\n  path: /a"), 7, "b", "path", "inside", "'/a'"),
    *[case(f"host-{id}", T(f"a:\n  hosts: [{host}]"), 7, "a", "hosts", word) for id, host, word in HOST_CASES],
    case("host-duplicate", T("a:\n  hosts: [x.com]\nb:\n  hosts: [X.com.]"), 9, "b", "hosts", "duplicate", "x.com"),
    case("subdomain-clashes-hosts", T("a: {hosts: [b.localhost]}\nb: {subdomain: b}"), 7, "b", None, "duplicate", "b.localhost"),
    case("subdomain-clash-field", T("a:\n  hosts: [b.localhost]\nb:\n  lazy: true\n  subdomain: b"), 10, "b", "subdomain", "duplicate"),
    case("host-in-server-names", "version: 1\nserver_names: [localhost, a.com]\ndefaults: {app: demoapp}\ntenants:\n  a:\n    lazy: true\n    hosts: [a.com]\n",
         7, "a", "hosts", "server_names"),
    case("subdomain-in-server-names", "version: 1\nbase_domain: x.com\nserver_names: [a.x.com]\ndefaults: {app: demoapp}\ntenants:\n  a:\n    lazy: true\n    subdomain: a\n",
         8, "a", "subdomain", "server_names"),
    # environment, databases, secrets
    case("env-var-missing", T("a:\n  path: /a\n  config: {X: '${NOPE}'}"), 8, "a", "config", "NOPE", "not set"),
    case("database-unknown-placeholder", T("a:\n  path: /a\n  database: sqlite:///{tenant}.db"), 8, "a", "database", "{tenant}"),
    case("database-not-a-url", T("a:\n  path: /a\n  database: not a url"), 8, "a", "database", "database url"),
    case("database-shared", T("a:\n  path: /a\n  database: postgresql://db/x\nb:\n  path: /b\n  database: postgresql://db/x"),
         11, "b", "database", "duplicate", "'a'"),
    case("database-shared-relative-absolute",
         T("a:\n  path: /a\n  database: sqlite:///app.db\nb:\n  path: /b\n  database: sqlite:///@DIR@/instance/a/app.db"),
         11, "b", "database", "duplicate", "'a'"),
    case("database-shared-other-spelling",
         T("a:\n  path: /a\n  database: postgresql://db.example.com/shared\n"
           "b:\n  path: /b\n  database: postgresql+psycopg2://DB.example.com:5432/shared"),
         11, "b", "database", "duplicate"),
    case("secret-key-in-defaults",
         "version: 1\nserver_names: [x]\ndefaults:\n  app: demoapp\n  config: {SECRET_KEY: s3cret}\ntenants:\n  a: {path: /a}\n",
         5, None, "defaults.config", "SECRET_KEY", "shared"),
    case("secret-key-shared", T("a: {path: /a, config: {SECRET_KEY: s3cret}}\nb: {path: /b, config: {SECRET_KEY: s3cret}}"),
         7, "b", "config", "duplicate", "SECRET_KEY"),
    case("database-uri-in-defaults-config",
         "version: 1\nserver_names: [x]\ndefaults:\n  app: demoapp\n  config:\n    SQLALCHEMY_DATABASE_URI: sqlite:////tmp/shared.db\ntenants:\n  a: {path: /a}\n  b: {path: /b}\n",
         6, None, "defaults.config.SQLALCHEMY_DATABASE_URI", "not allowed in config", "'database:'"),
    case("database-uri-in-config", T("a:\n  path: /a\n  config: {SQLALCHEMY_DATABASE_URI: 'sqlite:////tmp/x.db'}"),
         8, "a", "config.SQLALCHEMY_DATABASE_URI", "not allowed in config", "'database:'"),
    case("binds-in-config", T("a:\n  path: /a\n  config:\n    SQLALCHEMY_BINDS: {other: 'sqlite:////tmp/x.db'}"),
         9, "a", "config.SQLALCHEMY_BINDS", "not allowed in config", "one database"),
    case("connect-args-in-config", T("a:\n  path: /a\n  config:\n    SQLALCHEMY_ENGINE_OPTIONS:\n      pool_size: 1\n      connect_args: {dbname: b}"),
         11, "a", "config.SQLALCHEMY_ENGINE_OPTIONS.connect_args", "another database", "query"),
    case("database-shared-through-query",
         T("a:\n  path: /a\n  database: postgresql://db/a\nb:\n  path: /b\n  database: postgresql://other/b?host=db&dbname=a"),
         11, "b", "database", "duplicate", "'a'"),
    case("database-shared-through-a-loopback-alias",
         T("a:\n  path: /a\n  database: postgresql://u@127.0.0.1:5432/a\nb:\n  path: /b\n  database: postgresql://u@localhost/a"),
         11, "b", "database", "duplicate", "'a'"),
    case("database-shared-through-the-local-socket",
         T("a:\n  path: /a\n  database: postgresql://u@[::1]/a\nb:\n  path: /b\n  database: postgresql:///a?host=/var/run/postgresql"),
         11, "b", "database", "duplicate", "'a'"),
    # apps
    case("app-not-import-path", T("a:\n  path: /a\n  app: x y"), 8, "a", "app", "import path"),
    case("app-module-not-found", T("a:\n  path: /a\n  app: demoapp.notez"), 8, "a", "app", "not found", "did you mean 'demoapp.notes'"),
    case("app-missing", "version: 1\ntenants:\n  a:\n    path: /a\n", 3, "a", "app", "no app"),
]  # fmt: skip


@pytest.mark.parametrize("text, line, tenant, field, words", BAD)
def test_bad_input(
    files: Files, text: str, line: int, tenant: str | None, field: str | None, words: tuple[str]
) -> None:
    errors = files.errors(text)
    assert len(errors) == 1, "\n".join(map(str, errors))
    problem = errors[0]
    assert (problem.line, problem.tenant) == (line, tenant)
    if field is not None:
        assert problem.field == field or problem.field.startswith(field + "."), problem.field
    shown = str(problem).replace(files.pkg, "demoapp")
    for word in words:
        assert word.lower() in shown.lower()
    assert shown.startswith(f"{files.dir / 'tenants.yaml'}:{line}: ")
    assert "s3cret" not in shown  # a secret is never echoed
    assert not problem.warning


@pytest.mark.parametrize(
    "text, line",
    [
        (T("a:\n  path: /a\n  database: ${NOPE}"), 8),
        (
            T("a: {path: /a}\nb: {path: /b}").replace(
                "{app: demoapp}", "{app: demoapp, config: {SECRET_KEY: k}}"
            ),
            4,
        ),
    ],
    ids=["missing-env-var-in-database", "secret-key-in-defaults-two-tenants"],
)
def test_one_mistake_one_message(files: Files, text: str, line: int) -> None:
    errors = files.errors(text)
    assert [p.line for p in errors] == [line], "\n".join(map(str, errors))


# -- 3. every error at once -------------------------------------------------------------------


def test_all_errors_at_once_sorted_by_line(files: Files) -> None:
    path = files.write(
        T("""
        a:
          pth: /a
          lazy: maybe
        b:
          path: /B
        c:
          path: /c
          app: demoapp.nope
        d:
          path: /d
          path: /e
        """)
    )
    with pytest.raises(ConfigError) as info:
        load_tenants(path, environ={})
    problems = info.value.problems
    assert [(p.line, p.tenant, p.field) for p in problems] == [
        (7, "a", "pth"),
        (8, "a", "lazy"),
        (10, "b", "path"),
        (13, "c", "app"),
        (16, "d", "path"),  # found first (while parsing) but listed by line
    ]
    assert str(info.value).splitlines() == [str(p) for p in problems]
    for p in problems:
        assert str(p).startswith(f"{path}:{p.line}: tenant '{p.tenant}', field '{p.field}': ")


@pytest.mark.parametrize(
    "text, expected",
    [
        (HEAD.replace("server_names", "sever_names") + "  a: {path: /A}\n", [(3, None), (6, "a")]),
        (T("c: {path: /c, app: demoapp.nope}\nd: {path: /c}"), [(6, "c"), (7, "d")]),
    ],
    ids=["top-level-and-tenant", "broken-tenant-and-clash"],
)
def test_all_errors_at_once_across_checks(
    files: Files, text: str, expected: list[tuple[int, str | None]]
) -> None:
    assert [(p.line, p.tenant) for p in files.errors(text)] == expected


# -- 4. warnings ------------------------------------------------------------------------------


def test_no_server_names_is_a_warning(files: Files) -> None:
    path = files.write(HEAD.replace("server_names: [localhost]\n", "") + "  a: {path: /a}\n")
    tenant_set, problems = check_tenants(path, environ={})
    assert tenant_set is not None and [t.name for t in tenant_set] == ["a"]
    assert [(p.warning, p.field, p.line) for p in problems] == [(True, "server_names", 4)]
    assert "server_names" in str(problems[0]) and "warning" in str(problems[0])
    assert load_tenants(path, environ={}).warnings == tuple(problems)


def test_yaml_boolean_in_config_is_a_warning(files: Files) -> None:
    path = files.write(T("a:\n  path: /a\n  config: {SITE_NAME: no}"))
    tenant_set, problems = check_tenants(path, environ={})
    assert tenant_set is not None and tenant_set["a"].config["SITE_NAME"] is False
    [problem] = problems
    assert (problem.warning, problem.line, problem.tenant, problem.field) == (
        True,
        8,
        "a",
        "config.SITE_NAME",
    )
    assert "quote" in str(problem).lower() and "'no'" in str(problem)
    load_tenants(path, environ={})


def test_no_yaml_boolean_warning_outside_config(files: Files) -> None:
    assert check_tenants(files.write(T("config: {path: /c, lazy: no}")), environ={})[1] == []


def test_clean_file_has_no_problems(files: Files) -> None:
    tenant_set, problems = check_tenants(files.write(T("a: {path: /a}")), environ={})
    assert tenant_set is not None and problems == []


def test_a_host_named_twice_by_one_tenant_is_no_clash(files: Files) -> None:
    """A tenant's subdomain may also be in its own hosts: hosts clash between tenants only."""
    tenant_set = files.load(T("a: {subdomain: a, hosts: [A.localhost.]}"))
    assert set(tenant_set["a"].hosts) == {"a.localhost"}


# -- 5. unreadable files ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["missing.yaml", "a-directory"])
def test_unreadable_file_is_a_config_error(files: Files, name: str) -> None:
    path = files.dir / name
    if name == "a-directory":
        path.mkdir()
    with pytest.raises(ConfigError) as info:
        load_tenants(path, environ={})
    [problem] = info.value.problems
    assert problem.file == str(path) and str(info.value).startswith(f"{path}: ")
    assert "cannot read" in str(problem)
    assert check_tenants(path, environ={}) == (None, [problem])


# -- 6. loading creates nothing on disk -------------------------------------------------------


@pytest.mark.parametrize("good", [True, False], ids=["valid", "invalid"])
def test_loading_creates_no_instance_folder(files: Files, good: bool) -> None:
    text = T("a: {path: /a}\nb: {path: /b, enabled: false}" + ("" if good else "\nc: {path: /C}"))
    path = files.write(text)
    if good:
        assert len(load_tenants(path, environ={})) == 2
    else:
        with pytest.raises(ConfigError):
            load_tenants(path, environ={})
    assert not (files.dir / "instance").exists()


def test_loading_runs_no_tenant_code(files: Files) -> None:
    (files.dir / files.pkg / "__init__.py").write_text("raise RuntimeError('tenant code ran')\n")
    assert files.load(T("a: {path: /a, app: demoapp.notes:make}"))["a"].factory == "make"
    assert files.pkg not in sys.modules


def test_a_clashing_database_is_named_without_its_password(tmp_path: Path) -> None:
    # `check` prints this, and a refused live edit logs it.
    path = tmp_path / "tenants.yaml"
    url = "postgresql://shop:hunter2@db.example.com/shop?sslpassword=hunter3"
    path.write_text(
        "version: 1\ndefaults: {app: tests.apps.echo}\ntenants:\n"
        f"  a: {{path: /a, database: '{url}'}}\n  b: {{path: /b, database: '{url}'}}\n"
    )
    _, problems = check_tenants(path, environ={})
    shown = "\n".join(str(p) for p in problems)
    assert "duplicate database 'postgresql+psycopg://shop:***@db.example.com/shop" in shown
    assert "hunter" not in shown


def test_a_bad_item_in_a_list_leaves_the_rest_checked(tmp_path: Path) -> None:
    """Every mistake in one run: a list with one bad item is checked without that item, at
    the top level and in a tenant, so the other tenants and the other items are checked."""
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "version: 1\n"
        "base_domain: example.com\n"
        "server_names: [app.example.com, 5]\n"
        "defaults: {app: tests.apps.echo}\n"
        "tenants:\n"
        "  a: {hosts: [x.example.com, 5]}\n"
        "  b: {hosts: [x.example.com]}\n"
        "  c: {path: /c, app: no.such.module}\n"
    )
    _, problems = check_tenants(path, environ={})
    shown = "\n".join(str(p) for p in problems)
    assert "field 'server_names.1'" in shown
    assert "field 'hosts.1'" in shown
    assert "duplicate host 'x.example.com': tenant 'a'" in shown
    assert "app module 'no.such.module' was not found" in shown


def test_a_tenant_is_found_by_name(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    entries = "".join(f"  t{i}:\n" for i in range(50))
    path.write_text(
        f"version: 1\ndefaults: {{app: tests.apps.echo, mount: path}}\ntenants:\n{entries}"
    )
    tenant_set = load_tenants(path)
    assert [tenant_set[f"t{i}"].path for i in (49, 0)] == ["/t49", "/t0"]
    with pytest.raises(KeyError):
        tenant_set["t50"]
