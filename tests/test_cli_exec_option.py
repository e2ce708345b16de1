"""``exec NAME [-f FILE] -- COMMAND``: the dispatcher's options before ``--``, Flask's after it.

DESIGN.md section 6 accepts ``-f`` after any command; section 9 wants a usage mistake reported
before anything is built. Each test has two tenants files in ``tmp_path``, ``tenants.yaml``
(the default, in the current directory) and ``staging.yaml``, with different instance roots,
so the instance folder that appears tells which file ``exec`` read.
"""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dispatcher.cli import main
from tests.conftest import ROOT

WriteTenants = Callable[..., Path]

TENANTS = """\
    version: 1
    instance_root: {root}
    defaults: {{app: tests.apps.echo}}
    tenants:
      acme: {{path: /acme}}
"""


@pytest.fixture
def staging(write_tenants: WriteTenants, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """staging.yaml beside a default ./tenants.yaml, in the current directory: tmp_path."""
    write_tenants(TENANTS.format(root="default-instance"))
    monkeypatch.chdir(tmp_path)  # never the project folder: its tenants.yaml is real
    return write_tenants(TENANTS.format(root="staging-instance"), name="staging.yaml")


def cli(*args: str) -> Result:
    """``python -m dispatcher args`` in-process, in a throwaway context (``exec`` sets the
    tenant's logging context variable for the rest of the process)."""
    return contextvars.copy_context().run(CliRunner().invoke, main, list(args))


def instance_folders(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.glob("*-instance")}


@pytest.mark.parametrize("option", ["-f", "--tenants-file"])
def test_tenants_file_option_after_name(staging: Path, tmp_path: Path, option: str) -> None:
    result = cli("exec", "acme", option, str(staging), "--", "hello")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "hello from acme"
    assert instance_folders(tmp_path) == {"staging-instance"}
    assert (tmp_path / "staging-instance" / "acme").is_dir()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--bogus", "--", "hello"], "--bogus"),
        (["-f", "staging.yaml", "--bogus", "--", "hello"], "--bogus"),
        # Without "--", a Flask command's own option is taken as the dispatcher's: refused.
        (["routes", "--sort", "rule"], "--sort"),
    ],
)
def test_unknown_option_before_dashes_builds_nothing(
    staging: Path, tmp_path: Path, args: list[str], option: str
) -> None:
    result = cli("exec", "acme", *args)
    assert result.exit_code == 2, result.output
    assert f"Error: No such option '{option}'." in result.stderr
    assert "NAME -- COMMAND [ARGS]..." in result.stderr  # the usage line shows where it goes
    assert "Traceback" not in result.output
    assert instance_folders(tmp_path) == set()


def test_module_exec_reads_the_file_given_after_name(staging: Path, tmp_path: Path) -> None:
    """The report, as typed: ``python -m dispatcher exec acme -f staging.yaml -- hello``."""
    proc = subprocess.run(
        [sys.executable, "-m", "dispatcher", "exec", "acme", "-f", "staging.yaml", "--", "hello"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello from acme"
    assert instance_folders(tmp_path) == {"staging-instance"}
