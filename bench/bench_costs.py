"""What grows with the tenant count, and the test plugin's cost per test (issue 15).

Run from the repository root (about 3 minutes; part of ``make bench``)::

    .venv/bin/python bench/bench_costs.py [--only migrate,plugin,boot] [--no-docs]

- ``migrate``: ``python -m dispatcher migrate --all`` with nothing to apply, on 100 and on
  1,000 notes tenants at head, alternating; the marginal cost of a tenant is the difference
  over 900. The baseline, timed the same way, is the least any tool could do: open each
  database and read its revision.
- ``plugin``: setup + teardown per test of ``dispatcher.testing``'s ``client`` against the
  plain fixture most Flask projects write (build the app, ``create_all()``), on SQLite and,
  when a server answers at 127.0.0.1:5432, PostgreSQL; the projects and fixtures are
  bench/bench_plugin.py's, run here in alternating rounds.
- ``boot``: 100,000 lazy tenants under uWSGI (the project's uwsgi.ini, 1 process): the time
  until the first answer and the worker's RSS then, against 1 lazy tenant in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import notes_tenants, notes_tenants_file
from bench.issue15 import summary_section
from bench.report import ROOT, spread
from bench.results import save
from bench.sections import costs_section, migrate_marginal

#: The plugin row of issue 15: the setup and teardown of `client` alone.
WORKLOAD = "client only"

BENCHMARKS = ("migrate", "plugin", "boot")


# --- migrate --all, nothing to do --------------------------------------------------------------


def run_migrate(file: Path) -> float:
    command = [sys.executable, "-m", "dispatcher", "-f", str(file), "migrate", "--all"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"migrate failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed


def read_revisions(file: Path) -> float:
    """The baseline: open each tenant's database and read its revision."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from dispatcher import load_tenants

    started = time.perf_counter()
    for tenant in load_tenants(file).tenants:
        engine = create_engine(tenant.database_uri, poolclass=NullPool)
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision()
        engine.dispose()
    return time.perf_counter() - started


def bench_migrate(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    small, large = args.migrate_sizes
    files = {n: notes_tenants(work / f"migrate-{n}", n) for n in (small, large)}
    times: dict[str, dict[int, list[float]]] = {"migrate": {}, "baseline": {}}
    for i in range(args.rounds):
        order = (small, large) if i % 2 == 0 else (large, small)
        for n in order:
            times["migrate"].setdefault(n, []).append(run_migrate(files[n]))
            times["baseline"].setdefault(n, []).append(read_revisions(files[n]))
    return {
        side: {str(n): values for n, values in by_size.items()} for side, by_size in times.items()
    } | {"sizes": [small, large]}


# --- the test plugin ---------------------------------------------------------------------------


def bench_plugin_costs(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from bench import bench_plugin as plugin

    backends: list[tuple[str, str | None, int]] = [("SQLite", None, args.plugin_tests)]
    if plugin.postgres_available():
        backends.append(("PostgreSQL", plugin.PG_URL, args.plugin_pg_tests))
    found: dict[str, Any] = {}
    for backend, database, tests in backends:
        baseline_env: dict[str, str] = {}
        baseline_database = f"bench_baseline_{os.getpid()}"  # another run may share the server
        if database:
            plugin.postgres_database(baseline_database, create=True)
            baseline_env["BENCH_DATABASE"] = f"{database}/{baseline_database}"
        body = plugin.WORKLOADS[WORKLOAD]
        projects = {
            "plugin": (
                plugin.make_project(
                    work / f"plugin-{backend}", plugin.PLUGIN_CONFTEST, body, tests, database
                ),
                {},
            ),
            "baseline": (
                plugin.make_project(
                    work / f"baseline-{backend}", plugin.BASELINE_CONFTEST, body, tests, None
                ),
                baseline_env,
            ),
        }
        per_test: dict[str, list[float]] = {"plugin": [], "baseline": []}
        try:
            for i in range(args.rounds):
                for side in ("plugin", "baseline") if i % 2 == 0 else ("baseline", "plugin"):
                    overheads, _ = plugin.run(*projects[side])
                    per_test[side].append(statistics.median(overheads[1:]))  # first: imports
        finally:
            if database:
                plugin.postgres_database(baseline_database, create=False)
        found[backend] = per_test | {"tests": tests}
    return found


# --- 100,000 lazy tenants under uWSGI ----------------------------------------------------------


def bench_boot(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from bench.servers import Server

    sizes = (1, args.boot_tenants)
    files = {n: notes_tenants_file(work / f"boot-{n}", n) for n in sizes}
    for file in files.values():
        (file.parent / "instance").mkdir(exist_ok=True)
    boot: dict[str, list[float]] = {str(n): [] for n in sizes}
    rss: dict[str, list[float]] = {str(n): [] for n in sizes}
    flushed: dict[str, list[float]] = {str(n): [] for n in sizes}
    for i in range(args.boot_rounds):
        for n in sizes if i % 2 == 0 else sizes[::-1]:
            with Server(files[n], log=work / f"boot-{n}.log") as server:
                boot[str(n)].append(server.boot_seconds)
                rss[str(n)].append(server.rss_kib() / 1024)
                wait_for_first_flush(server, files[n].parent / "instance")
                flushed[str(n)].append(server.rss_kib() / 1024)
        print(
            f"boot round {i + 1}: { ({k: round(v[-1], 2) for k, v in boot.items()}) }",
            file=sys.stderr,
        )
    return {"boot_s": boot, "rss_mib": rss, "rss_flushed_mib": flushed, "sizes": list(sizes)}


def wait_for_first_flush(server: Any, instance: Path) -> None:
    """Until the worker's background thread has written its metrics once (every tenant's
    state: the worker as it then stays, idle)."""
    pattern = f".metrics/*/states_{server.worker_pid()}.log"
    deadline = time.monotonic() + 60
    while not any(instance.glob(pattern)):
        if time.monotonic() > deadline:
            raise SystemExit(f"no {pattern} in {instance} after 60 s")
        time.sleep(0.05)


# --- main --------------------------------------------------------------------------------------


def summary(results: dict[str, Any]) -> str:
    lines = []
    if "migrate" in results:
        m = results["migrate"]
        lines.append(
            f"migrate --all, nothing to do: {spread(migrate_marginal(m, 'migrate'), 2)} ms a "
            f"tenant (baseline {spread(migrate_marginal(m, 'baseline'), 2)} ms)"
        )
    for backend, r in results.get("plugin", {}).items():
        ratio = [b / p for p, b in zip(r["plugin"], r["baseline"], strict=True)]
        lines.append(
            f"plugin per test, {backend}: {spread(r['plugin'], 2)} ms, plain fixture "
            f"{spread(r['baseline'], 2)} ms, plain / plugin {spread(ratio, 2)}x"
        )
    if "boot" in results:
        b = results["boot"]
        for n in b["sizes"]:
            lines.append(
                f"{n:,} lazy tenants: boot {spread(b['boot_s'][str(n)], 2)} s, "
                f"worker RSS {spread(b['rss_mib'][str(n)])} MiB, after its first flush "
                f"{spread(b['rss_flushed_mib'][str(n)])} MiB"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="a subset, by name")
    parser.add_argument("--rounds", type=int, default=3, help="migrate, plugin: A/B rounds")
    parser.add_argument(
        "--migrate-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000]
    )
    parser.add_argument("--plugin-tests", type=int, default=60, help="tests per run, SQLite")
    parser.add_argument("--plugin-pg-tests", type=int, default=20, help="tests per run, PostgreSQL")
    parser.add_argument("--boot-tenants", type=int, default=100_000)
    parser.add_argument("--boot-rounds", type=int, default=2)
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    only = [b for b in args.only.split(",") if b]
    if unknown := set(only) - set(BENCHMARKS):
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {BENCHMARKS}")
    runners = {"migrate": bench_migrate, "plugin": bench_plugin_costs, "boot": bench_boot}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-costs-") as work:
        for name in only:
            started = time.monotonic()
            results[name] = runners[name](args, Path(work))
            print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(summary(results))
    if not args.no_docs:
        settings = {k: v for k, v in vars(args).items() if k not in ("only", "no_docs")}
        for name, figures in results.items():
            save(name, {"settings": settings, "figures": figures})
        costs_section()
        summary_section()


if __name__ == "__main__":
    main()
