"""``python -m dispatcher``: check, list, init-db, exec and shell (DESIGN.md sections 6, 9, 10).

Most tests drive the click group in-process with ``CliRunner``; a few run the real module.
"""

from __future__ import annotations

import contextvars
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dispatcher.cli import main
from tests.conftest import ECHO_TENANTS, ROOT

WriteTenants = Callable[..., Path]

#: ECHO_TENANTS plus one tenant in each non-eager state.
STATES = (
    ECHO_TENANTS
    + """\
      initech: {path: /initech, maintenance: true}
      hooli: {path: /hooli, enabled: false}
"""
)

#: Five errors, one per tenant line: (line, tenant, field or None).
BAD = """\
    version: 1
    defaults: {app: tests.apps.echo}
    tenants:
      acme: {pth: /acme}
      globex: {path: /globex/}
      umbrella: {subdomain: umbrella}
      initech: {path: /initech, app: tests.apps.ech}
      Bad_Name: {path: /bad}
"""
BAD_PROBLEMS = [
    (4, "acme", "pth"),
    (5, "globex", "path"),
    (6, "umbrella", "subdomain"),
    (7, "initech", "app"),
    (8, "Bad_Name", None),
]


def cli(*args: str, file: Path | None = None, **kwargs: object) -> Result:
    """Invoke ``python -m dispatcher [-f file] args`` in-process, in a throwaway context
    (``exec`` sets the tenant's logging context variable for the rest of the process)."""
    argv = ["-f", str(file), *args] if file is not None else list(args)
    return contextvars.copy_context().run(CliRunner().invoke, main, argv, **kwargs)  # type: ignore[arg-type]


def assert_lists_bad_problems(text: str, file: Path) -> None:
    lines = text.splitlines()
    for line, tenant, field in BAD_PROBLEMS:
        [hit] = [x for x in lines if x.startswith(f"{file}:{line}: tenant '{tenant}'")]
        if field:
            assert f"field '{field}'" in hit
    assert "Traceback" not in text


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


# --- check ---------------------------------------------------------------------------------


def test_check_good_file_prints_summary(write_tenants: WriteTenants) -> None:
    file = write_tenants(STATES)
    result = cli("check", file=file)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"{file}: ok, 4 tenant(s) enabled (3 by path, 1 by host), 1 disabled"
    )
    assert result.stderr == ""


def test_check_reports_every_error_with_its_line(write_tenants: WriteTenants) -> None:
    file = write_tenants(BAD)
    result = cli("check", file=file)
    assert result.exit_code == 1
    assert_lists_bad_problems(result.stderr, file)
    assert f"{file}: {len(BAD_PROBLEMS)} error(s)" in result.stderr
    assert result.stdout == ""


def test_check_warnings_do_not_fail(write_tenants: WriteTenants) -> None:
    no_server_names = [x for x in ECHO_TENANTS.splitlines() if "server_names" not in x]
    file = write_tenants("\n".join(no_server_names))
    result = cli("check", file=file)
    assert result.exit_code == 0, result.output
    [warning] = result.stderr.splitlines()
    assert warning.startswith(f"{file}:") and "warning:" in warning and "server_names" in warning
    assert ": ok, 3 tenant(s)" in result.stdout


def test_check_missing_file(tmp_path: Path) -> None:
    file = tmp_path / "nope.yaml"
    result = cli("check", file=file)
    assert result.exit_code == 1
    assert f"{file}: cannot read the tenants file: No such file or directory" in result.stderr
    assert "Traceback" not in result.output


def _plain_module(tmp: Path, name: str, code: str) -> str:
    (tmp / f"{name}.py").write_text(code)
    return name


def _package(tmp: Path, name: str, code: str) -> str:
    (tmp / name).mkdir()
    (tmp / name / "__init__.py").write_text(code)
    return name


def _package_factory(tmp: Path, name: str, code: str) -> str:
    return _package(tmp, name, code) + ":make_app"


def _submodule_of_package(tmp: Path, name: str, code: str) -> str:
    _package(tmp, name, code)  # the package's own __init__ is tenant code too
    (tmp / name / "app.py").write_text(code)
    return f"{name}.app"


@pytest.mark.parametrize(
    "layout",
    [
        _plain_module,
        _package,
        _package_factory,
        _submodule_of_package,  # regression: find_spec('pkg.app') ran pkg/__init__.py
    ],
)
def test_check_does_not_import_tenant_code(
    write_tenants: WriteTenants, tmp_path: Path, layout: Callable[[Path, str, str], str]
) -> None:
    marker = tmp_path / "imported"
    code = f"open({str(marker)!r}, 'w').close()\nraise RuntimeError('tenant code ran')\n"
    app = layout(tmp_path, f"marker_{uuid.uuid4().hex[:12]}", code)
    file = write_tenants(f"""
        version: 1
        server_names: [localhost]
        tenants:
          acme: {{path: /acme, app: '{app}'}}
    """)
    result = cli("check", file=file)
    assert not marker.exists(), "check ran tenant code"
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("with_f", [False, True], ids=["env", "f-beats-env"])
def test_tenants_file_from_env(write_tenants: WriteTenants, with_f: bool) -> None:
    good = write_tenants(ECHO_TENANTS)
    bad = write_tenants(BAD, "bad.yaml")
    env = {"TENANTS_FILE": str(bad if with_f else good)}
    result = cli("check", file=good if with_f else None, env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{good}: ok")


# --- list ----------------------------------------------------------------------------------


def test_list_shows_table_states_and_hides_passwords(write_tenants: WriteTenants) -> None:
    file = write_tenants(
        STATES
        + "      lazyco: {path: /lazyco, lazy: true, database: 'postgresql://u:secret@h/db'}\n"
    )
    result = cli("list", file=file)
    assert result.exit_code == 0, result.output
    header, *rows = [line.split() for line in result.stdout.splitlines()]
    assert header == ["NAME", "APP", "MOUNT", "DATABASE", "REVISION", "STATE"]
    table = {row[0]: row for row in rows}
    assert {name: row[-1] for name, row in table.items()} == {
        "acme": "eager",
        "globex": "eager",
        "umbrella": "eager",
        "initech": "maintenance",
        "hooli": "disabled",
        "lazyco": "lazy",
    }
    assert table["umbrella"][1:3] == ["tests.apps.echo", "umbrella.localhost"]
    assert table["acme"][3] == f"sqlite:///{file.parent}/instance/acme/app.db"
    assert table["lazyco"][3] == "postgresql+psycopg://u:***@h/db"
    assert "secret" not in result.output


def test_list_hides_password_given_in_query(write_tenants: WriteTenants) -> None:
    file = write_tenants(
        ECHO_TENANTS + "      pg: {path: /pg, database: 'postgresql://u@h/db?password=secret'}\n"
    )
    result = cli("list", file=file)
    assert result.exit_code == 0, result.output
    assert "secret" not in result.output


# --- init-db -------------------------------------------------------------------------------


def test_init_db_one_tenant(write_tenants: WriteTenants, tmp_path: Path) -> None:
    result = cli("init-db", "acme", file=write_tenants(ECHO_TENANTS))
    assert result.exit_code == 0, result.output
    assert result.stdout == "acme: schema ready\n"
    assert "item" in tables(tmp_path / "instance" / "acme" / "app.db")
    assert sorted(p.name for p in (tmp_path / "instance").iterdir()) == ["acme"]


def test_init_db_all_skips_disabled(write_tenants: WriteTenants, tmp_path: Path) -> None:
    result = cli("init-db", "--all", file=write_tenants(STATES))
    assert result.exit_code == 0, result.output
    done = ["acme", "globex", "umbrella", "initech"]  # maintenance included, hooli not
    assert result.stdout.splitlines() == [f"{name}: schema ready" for name in done]
    for name in done:
        assert "item" in tables(tmp_path / "instance" / name / "app.db")
    assert not (tmp_path / "instance" / "hooli").exists()


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ([], "Name one or more tenants, or pass --all"),
        (["acme", "--all"], "Name one or more tenants, or pass --all"),
        (["nope"], "No tenant named 'nope'"),
        (["acme", "nope"], "No tenant named 'nope'"),
        (["hooli"], "Tenant 'hooli' is disabled"),
    ],
)
def test_init_db_bad_selection_is_a_usage_error(
    write_tenants: WriteTenants, tmp_path: Path, names: list[str], message: str
) -> None:
    result = cli("init-db", *names, file=write_tenants(STATES))
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "instance").exists()


def test_init_db_failing_factory_fails_that_tenant_only(
    write_tenants: WriteTenants, tmp_path: Path
) -> None:
    file = write_tenants(
        ECHO_TENANTS + "      initech: {path: /initech, config: {FAIL_TO_BUILD: true}}\n"
    )
    result = cli("init-db", "--all", file=file)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{n}: schema ready" for n in ("acme", "globex", "umbrella")
    ]
    assert (
        "initech: failed: its factory 'tests.apps.echo' raised RuntimeError: "
        "this factory was told to fail"
    ) in result.stderr
    assert "init-db failed for initech" in result.stderr
    assert "item" in tables(tmp_path / "instance" / "umbrella" / "app.db")


# --- exec and shell ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (["exec", "acme", "--", "hello"], None, ["hello from acme"]),
        (["exec", "umbrella", "--", "hello"], None, ["hello from umbrella"]),
        (["exec", "acme", "--", "routes"], None, ["/whoami", "/items", "/login", "index"]),
        (["shell", "acme"], 'print(app.config["SESSION_COOKIE_NAME"])\n', ["session_acme"]),
    ],
)
def test_flask_commands_run_in_the_tenants_app(
    write_tenants: WriteTenants, args: list[str], stdin: str | None, expected: list[str]
) -> None:
    result = cli(*args, file=write_tenants(ECHO_TENANTS), input=stdin)
    assert result.exit_code == 0, result.output
    for text in expected:
        assert text in result.stdout


@pytest.mark.parametrize(
    "args", [["exec", "nope", "--", "hello"], ["shell", "nope"], ["exec", "hooli", "--", "hello"]]
)
def test_flask_commands_need_an_enabled_tenant(
    write_tenants: WriteTenants, tmp_path: Path, args: list[str]
) -> None:
    result = cli(*args, file=write_tenants(STATES))
    assert result.exit_code == 2
    assert f"'{args[1]}'" in result.stderr
    assert not (tmp_path / "instance").exists()


# --- a bad file, whatever the command ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["check"],
        ["list"],
        ["init-db", "acme"],
        ["init-db", "--all"],
        ["exec", "acme", "--", "hello"],
        ["shell", "acme"],
    ],
)
def test_bad_file_fails_every_command_cleanly(
    write_tenants: WriteTenants, tmp_path: Path, args: list[str]
) -> None:
    file = write_tenants(BAD)
    result = cli(*args, file=file)
    assert result.exit_code == 1
    assert_lists_bad_problems(result.stderr, file)
    assert result.stdout == ""
    assert not (tmp_path / "instance").exists()


# --- the real module -----------------------------------------------------------------------


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_module_check_bad_file(write_tenants: WriteTenants, tmp_path: Path) -> None:
    file = write_tenants(BAD)
    proc = run_module("-f", str(file), "check")
    assert proc.returncode == 1
    assert_lists_bad_problems(proc.stderr, file)
    assert proc.stdout == ""
    assert not (tmp_path / "instance").exists()


def test_module_help_lists_commands() -> None:
    proc = run_module("--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: python -m dispatcher" in proc.stdout
    listed = {
        line.split()[0]
        for line in proc.stdout.partition("Commands:")[2].splitlines()
        if line.strip()
    }
    assert listed == {
        "check",
        "list",
        "init-db",
        "migrate",
        "diff",
        "copy-db",
        "serve",
        "shell",
        "exec",
        "backup",
        "restore",
        "archive",
        "clone",
        "nginx-config",
        "status",
        "top",
    }


@pytest.mark.parametrize("where", ["before", "after"])
def test_tenants_file_option_before_or_after_the_command(
    write_tenants: WriteTenants, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """DESIGN 6: ``-f`` is accepted before or after the command, and wins over the default."""
    file = write_tenants(BAD, name="elsewhere.yaml")
    monkeypatch.chdir(tmp_path)  # ./tenants.yaml (the default) does not exist here
    argv = ["-f", str(file), "check"] if where == "before" else ["check", "-f", str(file)]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 1
    assert f"{file}: 5 error(s)" in result.output


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_accepts_the_tenants_file_after_its_name(name: str) -> None:
    """DESIGN 6 says it of every command, those that do not read the file included (top,
    status): a script that always passes it must not break on them."""
    result = CliRunner().invoke(main, [name, "-f", "tenants.yaml", "--help"])
    assert result.exit_code == 0, result.output
