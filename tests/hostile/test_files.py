"""Hostile and careless tenants files (DESIGN 9): each is one clear, located problem.

Every file of the corpus goes through ``python -m dispatcher check`` as a real subprocess, with
its address space limited to 1 GiB and its CPU time to 60 s, so a file that blows up fails the
test instead of the machine; it must exit 1 (never a signal), print no traceback, and print
exactly one error naming ``FILE:LINE``, what is wrong and how to fix it. The same file through
:func:`load_tenants` raises :class:`ConfigError` with that one problem, and as a live edit it
is refused while the running tenants keep serving. The few files that are fine (a BOM, CRLF
line ends, a long value) must load.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from werkzeug.test import Client

from dispatcher import ConfigError, Dispatcher, load_tenants, running
from tests.conftest import ROOT

#: Four lines; the first tenant is on line 5.
HEAD = "version: 1\nserver_names: [app.example.com]\ndefaults: {app: tests.apps.echo}\ntenants:\n"
GOOD = HEAD + "  acme: {path: /acme}\n"
#: Ten anchors, each a list of ten aliases of the one before: 10**9 values once expanded.
LAUGHS = "".join(
    f"{'  ' * 3}L{i}: &L{i} [{', '.join([f'*L{i - 1}'] * 10) if i else ', '.join(['lol'] * 10)}]\n"
    for i in range(10)
)
#: Ten mappings, each merging the one before ten times: 10**9 mappings walked, one key kept.
MERGES = "      M0: &M0 {a: 1}\n" + "".join(
    f"      M{i}: &M{i} {{<<: [{', '.join([f'*M{i - 1}'] * 10)}]}}\n" for i in range(1, 10)
)
MiB = 2**20
#: A file the dispatcher would write if told to run `touch`: a python tag must never run.
PWNED = "/tmp/dispatcher-hostile-pwned"


@dataclass(frozen=True)
class Case:
    """A file (made on demand: some are megabytes), and the one problem it must get."""

    make: Callable[[], bytes]
    line: int  # 0: the file is fine and loads
    words: tuple[str, ...] = ()  # in the message
    fix: str = ""  # in the fix, after the message


def text(content: str) -> Callable[[], bytes]:
    return lambda: content.encode()


def raw(content: bytes) -> Callable[[], bytes]:
    return lambda: content


def tenant(body: str) -> Callable[[], bytes]:
    """GOOD with one more tenant, ``body`` below its name on line 6 (its lines from 7)."""
    return text(GOOD + "  umbrella:\n" + "".join(f"    {line}\n" for line in body.splitlines()))


CASES: dict[str, Case] = {
    # -- aliases: loops, bombs, order
    "self-referencing-alias": Case(
        tenant("path: /u\nconfig: &c {X: *c}"), 8, ("'*c' is inside the value it names",), "anchor"
    ),
    "self-referencing-merge": Case(
        text(GOOD + "  umbrella: &u {<<: *u, path: /u}\n"), 6, ("'*u'", "loop"), "anchor"
    ),
    "alias-before-its-anchor": Case(
        text(HEAD + "  acme: {<<: *base, path: /acme}\n  globex: &base {path: /globex}\n"),
        5,
        ("'*base' has no anchor '&base' before it",),
        "above this line",
    ),
    "billion-laughs-top-level": Case(
        text(LAUGHS.replace("      ", "") + GOOD), 5, ("aliases expand to more than",), "alias"
    ),
    "billion-laughs-in-config": Case(
        tenant("path: /u\nconfig:\n  X:\n" + LAUGHS), 14, ("aliases expand to more than",), "alias"
    ),
    "merge-time-bomb": Case(  # small in memory (merged keys collapse), huge to walk
        tenant("path: /u\nconfig:\n  X:\n" + MERGES), 15, ("aliases expand to more than",), "alias"
    ),
    "alias-fan-out": Case(
        tenant(
            "path: /u\nconfig:\n  A: &a ["
            + ", ".join(["x"] * 2000)
            + "]\n  B: ["
            + ", ".join(["*a"] * 2000)
            + "]"
        ),
        10,
        ("aliases expand to more than",),
        "alias",
    ),
    # -- nesting: 100,000 levels would crash a recursive parser
    "deep-flow-sequences": Case(
        tenant("path: /u\nconfig: {X: " + "[" * 100_000 + "]" * 100_000 + "}"),
        8,
        ("nested more than 64 levels",),
        "Flatten it",
    ),
    "deep-flow-mappings": Case(
        tenant("path: /u\nconfig: " + "{a: " * 100_000 + "1" + "}" * 100_000),
        8,
        ("nested more than 64 levels",),
        "Flatten it",
    ),
    "deep-block-sequences": Case(
        tenant("path: /u\nconfig:\n  X:\n    " + "- " * 100_000 + "x"),
        10,
        ("nested more than 64 levels",),
        "Flatten it",
    ),
    "deep-block-mappings": Case(
        text(HEAD + "".join(f"{' ' * i}k{i}:\n" for i in range(2, 200)) + " " * 200 + "x: 1\n"),
        68,
        ("nested more than 64 levels",),
        "Flatten it",
    ),
    "deep-at-the-top": Case(
        text("[" * 100_000 + "]" * 100_000 + "\n"), 1, ("nested more than 64 levels",), "Flatten"
    ),
    # -- size
    "huge-file": Case(
        lambda: (GOOD + "# padding\n" * (33 * MiB // 10)).encode(),
        3_355_438,  # where byte 32 MiB falls: the padding's lines are 10 bytes
        ("larger than 32 MiB",),
        "Check that this is the tenants file",
    ),
    "two-million-values": Case(
        tenant("path: /u\nconfig:\n  X: [" + ",".join(["0"] * 2_100_000) + "]"),
        9,
        ("more than 2,000,000 values",),
        "Split it",
    ),
    "anchored-half-million": Case(  # kept as events for the aliases: memory, bounded
        tenant("path: /u\nconfig:\n  A: &a [" + ",".join(["0"] * 500_001) + "]"),
        9,
        ("anchored values (&name) hold more than 500,000 values",),
        "Anchor only what aliases repeat",
    ),
    "one-mebibyte-path": Case(
        tenant("path: " + "a" * MiB), 7, ("path 'aaa", "must start with '/'"), "Write '/aaa"
    ),
    "one-mebibyte-key": Case(
        tenant("path: /u\n" + "k" * MiB + ": 1"), 8, ("invalid YAML",), "Fix the syntax"
    ),
    # -- tags: never obeyed, never silently dropped
    "python-object-apply": Case(
        tenant(f"path: /u\nconfig:\n  X: !!python/object/apply:os.system ['touch {PWNED}']"),
        9,
        ("'!!python/object/apply:os.system' is not allowed",),
        "Remove it",
    ),
    "python-object-new": Case(
        tenant("path: /u\nconfig: !!python/object/new:os.system {args: ['true']}"),
        8,
        ("'!!python/object/new:os.system' is not allowed",),
        "Remove it",
    ),
    "python-name": Case(
        tenant("path: /u\nconfig: {X: !!python/name:os.system ''}"),
        8,
        ("'!!python/name:os.system' is not allowed",),
        "Remove it",
    ),
    "python-module-on-a-key": Case(
        tenant("path: /u\nconfig: {!!python/module:os X: 1}"),
        8,
        ("'!!python/module:os' is not allowed",),
        "Remove it",
    ),
    "binary": Case(
        tenant("path: /u\nconfig: {X: !!binary aGVsbG8=}"), 8, ("'!!binary'",), "Remove it"
    ),
    "set": Case(tenant("path: /u\nconfig: {X: !!set {a, b}}"), 8, ("'!!set'",), "Remove it"),
    "custom-tag": Case(tenant("path: !foo /u"), 7, ("'!foo' is not allowed",), "Remove it"),
    "verbatim-tag": Case(
        tenant("path: !<tag:evil.example,2024:x> /u"),
        7,
        ("'tag:evil.example,2024:x'",),
        "Remove it",
    ),
    # -- bytes and characters
    "nul-byte": Case(
        raw(GOOD.encode() + b"  umbrella: {path: /u\x00}\n"),
        6,
        ("a NUL byte is not allowed",),
        '"\\x00"',
    ),
    "terminal-escape": Case(
        raw(GOOD.encode() + b"  umbrella: {path: /u\x1b[2J}\n"),
        6,
        ("U+001B is not allowed",),
        '"\\x1b" inside double quotes',
    ),
    "escaped-terminal-sequence-in-a-value": Case(
        tenant('path: "/u\\e[2j\\e[1;1hok"'),
        7,
        ("path '/u\\x1b[2j\\x1b[1;1hok' has characters outside",),
        "Use only those characters",
    ),
    "bidi-override-in-a-name": Case(
        text(GOOD + '  "umbr\u202eella": {path: /u}\n'),
        6,
        ("'umbr\\u202eella' is not a valid tenant name",),
        "lower-case letters",
    ),
    "invalid-utf8": Case(
        raw(GOOD.encode() + b"  umbrella: {path: /u, config: {X: caf\xe9}}\n"),
        6,
        ("not UTF-8", "0xe9"),
        "Save it as UTF-8",
    ),
    "utf16": Case(raw(GOOD.encode("utf-16")), 1, ("not UTF-8",), "Save it as UTF-8"),
    "encoded-surrogate": Case(
        raw(GOOD.encode() + b"  umbrella: {path: /\xed\xa0\x80}\n"), 6, ("not UTF-8",), "UTF-8"
    ),
    "tab-indentation": Case(tenant("path: /u\n\tlazy: true"), 8, ("invalid YAML",), "spaces"),
    "crlf-with-a-typo": Case(
        text((GOOD + "  umbrella:\n    pth: /u\n").replace("\n", "\r\n")),
        7,
        ("unknown field 'pth'",),
        "Fix the spelling",
    ),
    # -- structure
    "list-as-key": Case(
        text(GOOD + "  ? [a, b]\n  : {path: /u}\n"), 6, ("a key must be text",), "as a word"
    ),
    "mapping-as-tenant-name": Case(
        text(GOOD + "  {a: b}: {path: /u}\n"), 6, ("a key must be text",), "as a word"
    ),
    "merge-of-a-scalar": Case(
        tenant("<<: /u\npath: /u"), 7, ("'<<' merges a mapping",), "'<<: *name'"
    ),
    "second-document": Case(
        text(GOOD + "---\nversion: 1\n"), 6, ("second YAML document",), "Keep one document"
    ),
    "empty": Case(text(""), 1, ("empty",), "version: 1"),
    "comments-only": Case(text("# tenants: soon\n"), 1, ("empty",), "version: 1"),
    "invalid-date": Case(
        tenant("path: /u\nconfig: {SINCE: 2024-02-30}"), 8, ("a date",), "Quote it"
    ),
    "five-thousand-digit-number": Case(
        tenant("path: /u\nconfig: {N: " + "9" * 5000 + "}"), 8, ("4300 digits",), "Quote it"
    ),
    # -- the contract's own details
    "version-yes": Case(
        text(GOOD.replace("version: 1", "version: yes")),
        1,
        ("version yes (YAML reads it as true)",),
        "the number 1",
    ),
    "version-quoted": Case(
        text(GOOD.replace("version: 1", "version: '1'")), 1, ("version '1'",), "the number 1"
    ),
    "version-float": Case(
        text(GOOD.replace("version: 1", "version: 1.0")), 1, ("version 1.0",), "the number 1"
    ),
    "database-uri-in-defaults": Case(
        text(
            "version: 1\nserver_names: [app.example.com]\ndefaults:\n  app: tests.apps.echo\n"
            "  config:\n    SQLALCHEMY_DATABASE_URI: sqlite:////tmp/shared.db\n"
            "tenants:\n  acme: {path: /acme}\n  globex: {path: /globex}\n"
        ),
        6,
        ("'SQLALCHEMY_DATABASE_URI' is not allowed in config",),
        "'database:'",
    ),
    "binds-in-a-tenant": Case(
        tenant("path: /u\nconfig:\n  SQLALCHEMY_BINDS: {shared: 'sqlite:////tmp/shared.db'}"),
        9,
        ("'SQLALCHEMY_BINDS' is not allowed in config",),
        "one database",
    ),
    "connect-args-to-another-database": Case(
        tenant(
            "path: /u\ndatabase: postgresql://db/umbrella\nconfig:\n"
            "  SQLALCHEMY_ENGINE_OPTIONS: {connect_args: {dbname: acme}}"
        ),
        10,
        ("engine option 'connect_args'", "another database"),
        "query",
    ),
    # -- fine: these load
    "bom": Case(raw(b"\xef\xbb\xbf" + GOOD.encode()), 0),
    "crlf": Case(text(GOOD.replace("\n", "\r\n")), 0),
    "cr-only": Case(text(GOOD.replace("\n", "\r")), 0),
    "one-mebibyte-value": Case(tenant("path: /u\nconfig: {SITE_NAME: " + "x" * MiB + "}"), 0),
    "merges-per-tenant": Case(
        text(
            HEAD
            + "  acme: &base {path: /acme, lazy: true, config: {A: 1, B: [1, 2], C: {d: 1}}}\n"
            + "".join(f"  t{i}: {{<<: *base, path: /t{i}}}\n" for i in range(2000))
        ),
        0,
    ),
    "nested-config": Case(
        tenant("path: /u\nconfig:\n  X: " + "{a: " * 20 + "[1, [2, {b: 3}]]" + "}" * 20), 0
    ),
}


def limit_child() -> None:
    """In the child, before exec: a blow-up ends it with an error, not the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))


def check(file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", "check", "-f", str(file)],
        capture_output=True,
        text=True,
        errors="replace",
        cwd=ROOT,
        preexec_fn=limit_child,  # the test process starts no threads that could deadlock
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(params=CASES.values(), ids=CASES.keys())
def case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Case, Path]:
    file = tmp_path / "tenants.yaml"
    file.write_bytes(request.param.make())
    return request.param, file


def test_check_exits_1_with_one_located_error(case: tuple[Case, Path]) -> None:
    expected, file = case
    result = check(file)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", output)  # one line per problem, inert
    assert all(len(line) < 2000 for line in output.splitlines())
    if not expected.line:
        assert (result.returncode, result.stderr) == (0, ""), output[-3000:]
        assert result.stdout.startswith(f"{file}: ok, ")
        return
    assert result.returncode == 1, output[-3000:]  # not a signal (negative), not a crash
    error, summary = result.stderr.splitlines()
    assert summary == f"{file}: 1 error(s)"
    assert error.startswith(f"{file}:{expected.line}: "), error
    what, _, fix = error.partition(". ")
    for word in expected.words:
        assert word in what, error
    assert expected.fix in fix, error
    assert not os.path.exists(PWNED)


def test_load_tenants_raises_one_located_problem(case: tuple[Case, Path]) -> None:
    expected, file = case
    if not expected.line:
        tenant_set = load_tenants(file)
        assert "acme" in {t.name for t in tenant_set}
        return
    with pytest.raises(ConfigError) as info:
        load_tenants(file)
    [problem] = info.value.problems
    assert (problem.file, problem.line) == (str(file), expected.line)
    assert all(word in str(problem) for word in expected.words), str(problem)
    assert not os.path.exists(PWNED)


#: The files that once crashed or hung a worker on a live edit (issue 11), and a few more.
LIVE = [
    "self-referencing-alias",
    "billion-laughs-in-config",
    "deep-flow-sequences",
    "deep-block-sequences",
    "python-object-apply",
    "invalid-utf8",
    "huge-file",
]


@pytest.mark.parametrize("name", LIVE)
def test_a_live_edit_is_refused_and_the_tenants_keep_serving(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "tenants.yaml"
    file.write_text(GOOD)
    dispatcher = Dispatcher(load_tenants(file), background=False)
    client = Client(dispatcher)
    file.write_bytes(CASES[name].make())
    os.utime(file, (1_700_000_000, 1_700_000_000))  # seen as an edit
    caplog.set_level(logging.ERROR, logger="dispatcher")
    dispatcher.tick()  # what the background thread does within a second
    response = client.get("/acme/", headers={"Host": "app.example.com"})
    assert (response.status_code, response.json["tenant"]) == (200, "acme")  # type: ignore[index]
    [record] = [r for r in caplog.records if r.name == "dispatcher"]
    assert "not valid" in record.getMessage()
    assert f"{file}:{CASES[name].line}: " in record.getMessage()


@pytest.mark.parametrize("name", LIVE)
def test_a_respawned_worker_reads_a_hostile_file_within_bounds(name: str, tmp_path: Path) -> None:
    """A uWSGI worker respawned after a refused edit looks up the broken file's instance
    root to find what its siblings serve (running.served_before): within the same bounds."""
    file = tmp_path / "tenants.yaml"
    file.write_bytes(CASES[name].make())
    assert running._instance_root(str(file)) == "instance"
