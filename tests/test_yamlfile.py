"""The YAML layer of tenants.yaml (DESIGN §3): ``${VAR}`` expansion that cannot inject YAML,
anchors and merge keys, and YAML 1.1 words. Bad YAML is covered by test_loader.test_bad_input."""

from __future__ import annotations

import datetime
import textwrap

import pytest

from dispatcher import check_tenants, load_tenants, yamllimits
from dispatcher.yamlfile import YamlDocument, parse_yaml
from tests.test_loader import Files, T, files_fixture

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


# -- values, tags and aliases as the event walker reads them -----------------------------------


def parse(text: str, **environ: str) -> YamlDocument:
    return parse_yaml(textwrap.dedent(text), "f.yaml", environ)


def test_plain_values_are_yaml_11_and_quoted_ones_text() -> None:
    doc = parse(
        """
        a: [yes, No, ~, null, '', 0700, 0x1f, 1_000, 1.5, .inf, 2024-01-31, "5", '${X}']
        b: !!str 5
        b2: ${X}
        c: !!int "7"
        d: !!float '1.5'
        e: !!bool "true"
        f: !!null ""
        g: ! 5
        """,
        X="x",
    )
    assert doc.problems == []
    assert doc.data == {
        "a": [True, False, None, None, "", 448, 31, 1000, 1.5, float("inf"),
              datetime.date(2024, 1, 31), "5", "x"],
        "b": "5", "b2": "x", "c": 7, "d": 1.5, "e": True, "f": None, "g": "5",
    }  # fmt: skip
    assert doc.plain_scalars[("a", 0)] == "yes" and ("a", 11) not in doc.plain_scalars


@pytest.mark.parametrize(
    "value, tag",
    [
        ("!!python/object/apply:os.system [echo hi]", "!!python/object/apply:os.system"),
        ("!!python/name:os.system ''", "!!python/name:os.system"),
        ("!!binary aGk=", "!!binary"),
        ("!!set {a, b}", "!!set"),
        ("!!omap [a: 1]", "!!omap"),
        ("!!timestamp 2024-01-01", "!!timestamp"),
        ("!foo x", "!foo"),
        ("!<tag:example.com,2024:x> y", "tag:example.com,2024:x"),
        ("!!map [1]", "!!map"),
        ("!!seq {a: 1}", "!!seq"),
    ],
)
def test_other_tags_are_reported_never_obeyed_or_dropped(value: str, tag: str) -> None:
    doc = parse(f"a: 1\nb: {value}\n")
    [problem] = doc.problems
    assert (problem.line, problem.path) == (2, ("b",))
    assert f"YAML tag '{tag}' is not allowed" in str(problem) and "Remove it" in str(problem)


@pytest.mark.parametrize(
    "value, words",
    [
        ("2024-02-30", "a date"),
        ("1" * 5000, "4300 digits"),
        ("!!int x", "a whole number"),
        ("!!bool maybe", "true or false"),
    ],
)
def test_values_python_cannot_convert_are_problems(value: str, words: str) -> None:
    doc = parse(f"a: 1\nb: {value}\n")
    [problem] = doc.problems
    assert problem.line == 2 and words in str(problem) and "Quote it" in str(problem)
    assert doc.data["b"] == value.split(" ")[-1]  # kept as text, so checking goes on


def test_aliases_merges_and_alias_keys() -> None:
    doc = parse("""
        base: &base {x: 1, y: [1, 2]}
        key: &k name
        m:
          z: 3
          <<: [*base, {x: 2, w: 4}]
          x: 0
        n: {*k : 5, <<: *base}
        """)
    assert doc.problems == []
    assert doc.data["m"] == {"x": 0, "y": [1, 2], "w": 4, "z": 3}
    assert doc.data["n"] == {"name": 5, "x": 1, "y": [1, 2]}
    assert doc.data["m"]["y"] is not doc.data["n"]["y"]  # every use is a copy
    assert doc.lines[("m", "x")] == 7 and doc.lines[("m", "y")] == 2  # own keys keep theirs


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("a: &a [1, *a]\n", 1, "'*a' is inside the value it names"),
        ("a: &a {b: {<<: *a}}\n", 1, "'*a' is inside the value it names"),
        ("a: *b\nb: &b 1\n", 1, "'*b' has no anchor '&b' before it"),
        ("a: {<<: 5}\n", 1, "'<<' merges a mapping"),
        ("? [a]\n: 1\n", 1, "a key must be text"),
        ("a: 1\n---\nb: 2\n", 2, "second YAML document"),
    ],
)
def test_alias_and_structure_mistakes_are_located(text: str, line: int, words: str) -> None:
    doc = parse(text)
    [problem] = doc.problems
    assert problem.line == line and words in str(problem), str(problem)


# -- limits: a hostile file is a problem like any other, found before it can do harm ------------


def nested(levels: int) -> str:
    return "a: " + "[" * (levels - 1) + "]" * (levels - 1) + "\n"


def test_nesting_up_to_the_limit_is_read_and_one_more_level_is_not() -> None:
    assert parse(nested(yamllimits.MAX_DEPTH)).problems == []
    [problem] = parse(nested(yamllimits.MAX_DEPTH + 1)).problems
    assert str(problem) == (
        f"f.yaml:1: values are nested more than {yamllimits.MAX_DEPTH} levels deep. Flatten it: "
        "a tenants file needs a few levels (tenants, a tenant, its config, a value in it)"
    )


def test_alias_expansion_is_bounded_by_what_the_file_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(yamllimits, "ALIAS_FLOOR", 100)
    monkeypatch.setattr(yamllimits, "ALIAS_RATIO", 2)
    # An anchor of 10 values used 9 times: 90 expanded, within 100 + 2 per value written.
    fine = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [" + ", ".join(["*a"] * 9) + "]\n"
    assert parse(fine).problems == []
    bomb = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b]\n"
    [problem] = parse(bomb).problems
    assert problem.line == 3 and "aliases expand to more than 100 values" in str(problem)


def test_values_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamllimits, "MAX_VALUES", 10)
    assert parse("a: [1, 2, 3]\nb: {c: 4}\n").problems == []  # 9 values: root, 2 keys...
    [problem] = parse("a: [1, 2, 3]\nb: {c: 4, d: 5}\n").problems
    assert problem.line == 2 and "more than 10 values" in str(problem)


def test_anchored_values_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamllimits, "MAX_ANCHORED", 6)
    assert parse("a: &a [1, {b: 2}]\nc: &c 3\nd: [*a, *c]\n").problems == []  # 6 anchored
    [problem] = parse("a: &a [1, {b: 2}]\nc: &c [3]\n").problems
    assert problem.line == 2 and "anchored values (&name) hold more than 6" in str(problem)


def test_size_is_checked_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamllimits, "MAX_BYTES", 40)
    assert parse("- 1\n" * 8 + "- ab\n").problems == []  # 37 bytes
    # 40 characters, 44 bytes in UTF-8; and a syntax error past the limit, never reached.
    [problem] = parse("- 1\n" * 8 + "- éééé\n" + "[").problems
    assert problem.line == 9 and "larger than" in str(problem)
