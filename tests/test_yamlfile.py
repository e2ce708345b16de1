"""The YAML layer of tenants.yaml (DESIGN §3): ``${VAR}`` expansion that cannot inject YAML,
anchors and merge keys, and YAML 1.1 words. Bad YAML is covered by test_spec.test_bad_input."""

from __future__ import annotations

import pytest

from dispatcher import check_tenants, load_tenants
from tests.test_spec import Files, T, files_fixture

files = pytest.fixture(files_fixture)


@pytest.mark.parametrize(
    "environ, expected",
    [({}, "Fallback"), ({"SITE": "From env"}, "From env"), ({"SITE": ""}, "")],
    ids=["unset", "set", "set-empty"],
)
def test_env_var_with_default(files: Files, environ: dict[str, str], expected: str) -> None:
    tenant_set = files.load(T("a: {path: /a, config: {SITE_NAME: '${SITE:-Fallback}'}}"), **environ)
    assert tenant_set["a"].config["SITE_NAME"] == expected


def test_env_defaults_to_os_environ(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_DATABASE_URL", "postgresql://db.example.com/demo")
    tenant_set = load_tenants(files.write(T("a: {path: /a, database: '${DEMO_DATABASE_URL}'}")))
    assert tenant_set["a"].database_uri == "postgresql+psycopg://db.example.com/demo"


@pytest.mark.parametrize(
    "evil", ["x\nevil: 1", "x\n  mallory: {path: /m}", "x', EVIL: 'y", "x}\nmallory: {path: /m"]
)
def test_env_var_content_is_one_string(files: Files, evil: str) -> None:
    text = T("""
        a:
          path: /a
          config:
            SITE_NAME: "${EVIL}"
            PLAIN: ${EVIL}
        """)
    tenant_set = files.load(text, EVIL=evil)
    assert [t.name for t in tenant_set] == ["a"]
    assert dict(tenant_set["a"].config) == {"SITE_NAME": evil, "PLAIN": evil}


def test_keys_are_not_expanded(files: Files) -> None:
    tenant_set = files.load(T("a: {path: /a, config: {'${KEY}': 1}}"), KEY="OTHER")
    assert dict(tenant_set["a"].config) == {"${KEY}": 1}


def test_anchors_and_merge_keys_own_keys_win(files: Files) -> None:
    tenant_set = files.load(
        T("""
        acme: &base
          app: demoapp.notes
          path: /acme
          lazy: true
          config: {SITE_NAME: Acme, PER_PAGE: 5}
        globex:
          <<: *base
          path: /globex
          config: {SITE_NAME: Globex}
        initech:
          <<: [{lazy: false, maintenance: {retry_after: 9}}, *base]
          path: /initech
        """)
    )
    acme, globex, initech = tenant_set
    assert (globex.app, globex.path, globex.lazy) == (f"{files.pkg}.notes", "/globex", True)
    assert dict(globex.config) == {"SITE_NAME": "Globex"}
    assert (initech.lazy, initech.maintenance, initech.path) == (False, 9, "/initech")
    assert dict(initech.config) == dict(acme.config)
    assert len({t.database_uri for t in tenant_set}) == 3


def test_quoted_yaml_11_words_are_text(files: Files) -> None:
    path = files.write(T("a: {path: /a, config: {SITE_NAME: 'no', MODE: \"on\", PERM: '0700'}}"))
    tenant_set, problems = check_tenants(path, environ={})
    assert problems == [] and tenant_set is not None
    assert dict(tenant_set["a"].config) == {"SITE_NAME": "no", "MODE": "on", "PERM": "0700"}


def test_env_default_may_hold_a_placeholder(files: Files) -> None:
    tenant_set = files.load(T("a: {path: /a, database: '${DB:-sqlite:///{instance_path}/app.db}'}"))
    assert tenant_set["a"].database_uri == f"sqlite:///{files.dir}/instance/a/app.db"


def test_plain_equals_sign_is_text(files: Files) -> None:
    tenant_set = files.load(T("a: {path: /a, config: {SEPARATOR: =}}"))
    assert tenant_set["a"].config["SEPARATOR"] == "="
