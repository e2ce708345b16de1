"""Per-test overhead of ``dispatcher.testing`` against a plain Flask-SQLAlchemy fixture.

Run it from the repository root; it prints a table and writes it into docs/benchmarks.md under
its own heading (other sections of that file are left alone)::

    .venv/bin/python bench/bench_plugin.py [--tests 200] [--rounds 5]
    .venv/bin/python bench/bench_plugin.py --compare-with /tmp/old-checkout   # before/after

Both sides run the demo notes app (``tenants.notes``) for one tenant in a throwaway pytest
project, ``N`` tests in a pytest subprocess, for two workloads: ``client`` and nothing else
(the fixture's own cost), and a test that writes a row and reads it back through the app's
session (so the database really has to be put back):

- plugin: ``pytest_plugins = ["dispatcher.testing"]``; the app is built once per session on
  a folder and database of its own and reused; after each test its config, folder and
  database are put back (SQLite: the file replaced; PostgreSQL: tables emptied and reseeded,
  sequences restarted, in one round trip).
- baseline: the fixture most Flask projects write: build the app and run ``create_all()`` for
  every test (SQLite: a new file in a new folder; PostgreSQL: one database, ``create_all()``
  before and ``drop_all()`` after each test).
- with ``--compare-with PATH``: the plugin as another checkout has it (e.g. an older commit),
  as a third side, to measure a change before and after in the same run.

The overhead of a test is its setup plus teardown time as pytest reports them (the test's own
body is the same on every side); the first test (imports, the app's first build) is left out
of the median and shown on its own. The sides run back to back (A B A B ...) because these
machines drift by up to 2x over minutes; each round's ratio compares runs taken seconds apart.
PostgreSQL rows appear when ``psycopg`` is importable and a server answers at 127.0.0.1:5432
(user postgres).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import DOC, ROOT, machine, spread, write_section

HEADING = "## Test plugin: per-test overhead (bench/bench_plugin.py)"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432"

TIMING = """
import json, os
import pytest

durations = {}

def pytest_runtest_logreport(report):
    if report.when in ("setup", "teardown"):
        durations[report.nodeid] = durations.get(report.nodeid, 0.0) + report.duration
    if report.failed:
        raise SystemExit(f"benchmark test failed: {report.nodeid}\\n{report.longreprtext}")

def pytest_sessionfinish(session):
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump(list(durations.values()), f)
"""

WORKLOADS = {
    "client only": """
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_overhead(client, i):
    pass
""",
    "writes a row": """
import pytest
from sqlalchemy import func, select

from tenants.notes.extensions import db
from tenants.notes.models import User

@pytest.mark.parametrize("i", range({n}))
def test_overhead(app, client, i):
    with app.app_context():
        db.session.add(User(username="alice", password_hash="x"))
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(User)) == 1
""",
}

PLUGIN_CONFTEST = 'pytest_plugins = ["dispatcher.testing"]\n' + TIMING

BASELINE_CONFTEST = (
    TIMING
    + """
import tempfile

from dispatcher import TenantConfig
from tenants.notes import create_app
from tenants.notes.extensions import db

DATABASE = os.environ.get("BENCH_DATABASE")


@pytest.fixture
def app(tmp_path_factory):
    folder = tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())
    tenant = TenantConfig(
        name="acme",
        app="tenants.notes",
        instance_path=folder,
        database_uri=DATABASE or f"sqlite:///{folder}/app.db",
        path="/acme",
        config={"SECRET_KEY": "test", "TESTING": True},
    )
    app = create_app(tenant)
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        if DATABASE:
            db.drop_all()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()
"""
)


def tenants_yaml(database: str | None) -> str:
    line = f"    database: {database}/bench_{{name}}\n" if database else ""
    return f"version: 1\ntenants:\n  acme:\n    app: tenants.notes\n    path: /acme\n{line}"


def make_project(folder: Path, conftest: str, tests: str, count: int, database: str | None) -> Path:
    folder.mkdir()
    (folder / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    (folder / "conftest.py").write_text(textwrap.dedent(conftest))
    (folder / "test_bench.py").write_text(tests.format(n=count))
    (folder / "tenants.yaml").write_text(tenants_yaml(database))
    return folder


def run(project: Path, extra_env: dict[str, str], root: Path = ROOT) -> tuple[list[float], float]:
    """Per-test overheads in ms (in test order) and the run's wall time in s, with the
    dispatcher (and the notes app) imported from the checkout ``root``."""
    out = project / "durations.json"
    env = {
        **os.environ,
        **extra_env,
        "BENCH_OUT": str(out),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    env.pop("TENANTS_FILE", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pytest failed in {project}:\n{done.stdout}\n{done.stderr}")
    return [d * 1000 for d in json.loads(out.read_text())], wall


def postgres_available() -> bool:
    if importlib.util.find_spec("psycopg") is None:
        return False
    import psycopg  # type: ignore[import-not-found, unused-ignore]

    try:
        psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres").close()
    except psycopg.OperationalError:
        return False
    return True


def postgres_database(name: str, create: bool) -> None:
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True
    ) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            connection.execute(f'CREATE DATABASE "{name}"')


def factory_ms(folder: Path, builds: int = 50) -> float:
    """Median ms of one ``build_app`` of the notes app on an existing database, in process:
    what a fixture that builds an app per test pays for the app's own factory."""
    from dispatcher import TenantConfig, build_app
    from dispatcher.database import app_engines

    folder.mkdir(exist_ok=True)
    tenant = TenantConfig(
        name="acme",
        app="tenants.notes",
        instance_path=str(folder),
        database_uri=f"sqlite:///{folder}/app.db",
        path="/acme",
    )
    times = []
    for i in range(builds + 1):
        started = time.perf_counter()
        app = build_app(tenant, create_schema=i == 0)
        times.append((time.perf_counter() - started) * 1000)
        for engine in app_engines(app):
            engine.dispose()
    return statistics.median(times[1:])


LABELS = {
    "plugin": "dispatcher.testing",
    "baseline": "plain fixture (create_all per test)",
    "other": "dispatcher.testing, other checkout",
}


def bench(
    backend: str, workload: str, tests: int, rounds: int, work: Path, other: Path | None
) -> list[str]:
    """Table rows for one backend and workload: one per side, then the ratios."""
    database = PG_URL if backend == "PostgreSQL" else None
    baseline_env = {}
    baseline_database = f"bench_baseline_{os.getpid()}"  # another run may share the server
    if database:
        postgres_database(baseline_database, create=True)
        baseline_env["BENCH_DATABASE"] = f"{database}/{baseline_database}"
    slug = f"{backend}-{workload}".replace(" ", "-")
    body = WORKLOADS[workload]
    sides: dict[str, tuple[Path, dict[str, str], Path]] = {
        "plugin": (
            make_project(work / f"p-{slug}", PLUGIN_CONFTEST, body, tests, database),
            {},
            ROOT,
        ),
        "baseline": (
            make_project(work / f"b-{slug}", BASELINE_CONFTEST, body, tests, None),
            baseline_env,
            ROOT,
        ),
    }
    if other is not None:
        sides["other"] = (sides["plugin"][0], {}, other)
    results: dict[str, list[tuple[float, float, float]]] = {side: [] for side in sides}
    ratios: dict[str, list[float]] = {side: [] for side in sides if side != "plugin"}
    try:
        for _ in range(rounds):
            medians = {}
            for side, (project, env, root) in sides.items():
                overheads, wall = run(project, env, root)
                medians[side] = statistics.median(overheads[1:])
                results[side].append((medians[side], overheads[0], wall))
            for side in ratios:
                ratios[side].append(medians[side] / medians["plugin"])
    finally:
        if database:
            postgres_database(baseline_database, create=False)
    rows = []
    for side, runs in results.items():
        per_test, first, wall = zip(*runs, strict=True)
        rows.append(
            f"| {backend} | {workload} | {LABELS[side]} | {spread(list(per_test), 2)} "
            f"| {spread(list(first))} | {spread(list(wall))} |"
        )
    for side, values in ratios.items():
        rows.append(
            f"| {backend} | {workload} | **{LABELS[side]} / dispatcher.testing** "
            f"| **{spread(values)}x** | | |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--tests", type=int, default=200, help="tests per run (SQLite)")
    parser.add_argument("--pg-tests", type=int, default=50, help="tests per run (PostgreSQL)")
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds")
    parser.add_argument("--compare-with", type=Path, help="another checkout, run as a side")
    args = parser.parse_args()
    other = args.compare_with.resolve() if args.compare_with else None
    load = os.getloadavg()[0]
    backends = [("SQLite", args.tests)]
    if postgres_available():
        backends.append(("PostgreSQL", args.pg_tests))
    factory = []
    with tempfile.TemporaryDirectory(prefix="bench-plugin-") as work:
        rows = []
        for backend, tests in backends:
            for workload in WORKLOADS:
                rows += bench(backend, workload, tests, args.rounds, Path(work), other)
        for i in range(args.rounds):
            factory.append(factory_ms(Path(work) / f"factory-{i}"))
    counts = ", ".join(f"{tests} tests per run on {backend}" for backend, tests in backends)
    compared = f" The other checkout: {other}." if other else ""
    compared += f" Load average at the start and the end: {load:.1f}, {os.getloadavg()[0]:.1f}."
    section = "\n".join(
        [
            HEADING,
            "",
            f"Setup + teardown of the test's fixtures for one tenant of the notes app, in ms "
            f"per test: median over a run's tests (the first left out), then median (min-max) "
            f"over {args.rounds} interleaved rounds; {counts}. The first test carries imports "
            "and, for the plugin, the app's first build and its schema. Machine: "
            + machine()
            + "."
            + compared,
            "",
            "| backend | test | fixture | per test, ms | first test, ms | run wall time, s |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"For scale: one build of the notes app (`build_app`, its factory and the "
            f"dispatcher's isolation) costs {spread(factory, 2)} ms here, which a fixture that "
            "builds an app per test pays every test; the plugin builds it once per (tenant, "
            '`app_config`) and puts it back after each test (docs/testing.md, "Databases, '
            'and what isolation costs").',
            "",
        ]
    )
    if len(backends) == 1:
        section += (
            "\nPostgreSQL: not measured (psycopg is not importable or no server answers at "
            "127.0.0.1:5432).\n"
        )
    print(section)
    write_section(HEADING, section)
    print(f"written to {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
