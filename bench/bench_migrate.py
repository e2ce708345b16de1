"""``python -m dispatcher migrate --all`` with nothing to apply, for 1,000 SQLite tenants.

Run from the repository root; prints a table and writes it into docs/benchmarks.md::

    .venv/bin/python bench/bench_migrate.py [--tenants 1000] [--rounds 3]

Every tenant runs the notes app and its database is already at head (copies of one database
built by the dispatcher), so the command only has to find that out: build each app, read its
revision, compare with head. The baseline, measured in the same run, is the least any tool
could do: a loop that opens each database and reads its revision, nothing else. The sides
alternate (A B A B ...) because this machine drifts; the anchor is django-tenants, whose users
report 900 tenants taking 12 minutes (0.8 s per tenant) with nothing to apply.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alembic.runtime.migration import MigrationContext

from bench.report import ROOT, machine, spread, write_section
from dispatcher import build_app, load_tenants
from dispatcher.database import app_engines

HEADING = "## Migrations: `migrate --all` with nothing to apply (bench/bench_migrate.py)"


def make_tenants(work: Path, count: int) -> Path:
    """A tenants file of ``count`` notes tenants whose databases are all at head."""
    lines = ["version: 1", "server_names: [localhost]", f"instance_root: {work / 'instance'}"]
    lines += ["defaults: {app: tenants.notes, mount: path, lazy: true}", "tenants:"]
    lines += [f"  t{i:05d}:" for i in range(count)]
    file = work / "tenants.yaml"
    file.write_text("\n".join(lines) + "\n")
    tenant_set = load_tenants(file)
    first = tenant_set.tenants[0]
    for engine in app_engines(build_app(first)):  # created at head by the dispatcher
        engine.dispose()
    template = Path(first.instance_path) / "app.db"
    for tenant in tenant_set.tenants[1:]:
        os.makedirs(tenant.instance_path, mode=0o700)
        shutil.copyfile(template, Path(tenant.instance_path) / "app.db")
    return file


def run_migrate(file: Path, jobs: int) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "-f", str(file), "migrate", "--all", "-j", str(jobs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or result.stdout.count("up to date") < 2:
        raise SystemExit(f"migrate failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def read_revisions(file: Path) -> float:
    """The baseline: open each database and read its revision."""
    started = time.perf_counter()
    for tenant in load_tenants(file).tenants:
        engine = create_engine(tenant.database_uri, poolclass=NullPool)
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision()
        engine.dispose()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sides = {"baseline": [], "jobs 1": [], "jobs 2": []}
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as work:
        file = make_tenants(Path(work), args.tenants)
        for _ in range(args.rounds):
            sides["baseline"].append(read_revisions(file))
            sides["jobs 1"].append(run_migrate(file, 1))
            sides["jobs 2"].append(run_migrate(file, 2))
    n = args.tenants
    labels = {
        "baseline": "baseline: read each revision, nothing else",
        "jobs 1": "`migrate --all`",
        "jobs 2": "`migrate --all --jobs 2`",
    }
    rows = []
    for side, times in sides.items():
        ratios = [t / b for t, b in zip(times, sides["baseline"], strict=True)]
        per_tenant = [t / n * 1000 for t in times]
        rows.append(
            f"| {labels[side]} | {spread(times)} | {spread(per_tenant, 2)} | {spread(ratios)}x |"
        )
    section = "\n".join(
        [
            HEADING,
            "",
            f"{n} SQLite tenants of the notes app, all at head; wall time of the whole command "
            f"(process start, loading the file, every tenant), median (min-max) over "
            f"{args.rounds} interleaved rounds. Machine: {machine()}. Anchor: django-tenants, "
            "900 tenants in 12 minutes (800 ms per tenant).",
            "",
            "| what | total, s | per tenant, ms | vs baseline |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    print(section)
    write_section(HEADING, section)


if __name__ == "__main__":
    main()
