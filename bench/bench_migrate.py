"""``python -m dispatcher migrate --all`` with nothing to apply: the cost per SQLite tenant.

Run from the repository root; prints a table and writes it into docs/benchmarks.md::

    .venv/bin/python bench/bench_migrate.py [--tenants 1000] [--small 100] [--rounds 5]
    .venv/bin/python bench/bench_migrate.py --compare-with /tmp/old-checkout   # before/after

Every tenant runs the notes app and its database is already at head (copies of one database
built by the dispatcher), so the command only has to find that out. The figure that matters
is the **marginal** cost of a tenant: (time for N tenants - time for the small count) / the
difference, so that process start, imports and loading the file cancel out. The baseline,
measured in the same run, is the least any tool could do: a process that loads the file,
opens each database with ``sqlite3`` and reads its revision, nothing else.
``--compare-with`` runs the same command from another checkout (e.g. an older commit) as one
more side. The sides alternate (A B A B ...) because this machine drifts; the anchor is
django-tenants, whose users report 900 tenants taking 12 minutes (0.8 s per tenant) with
nothing to apply.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import ROOT, machine, spread, write_section
from dispatcher import build_app, load_tenants
from dispatcher.database import app_engines

HEADING = "## Migrations: `migrate --all` with nothing to apply (bench/bench_migrate.py)"


def make_tenants(work: Path, count: int) -> Path:
    """A tenants file of ``count`` notes tenants whose databases are all at head."""
    work.mkdir()
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


def run_migrate(file: Path, jobs: int, root: Path = ROOT) -> float:
    """Wall time of ``migrate --all`` run from the checkout ``root``."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "-f", str(file), "migrate", "--all", "-j", str(jobs)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or result.stdout.count("up to date") < 2:
        raise SystemExit(f"migrate failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def read_revisions(file: Path) -> None:
    """The baseline: open each database and read its revision."""
    for tenant in load_tenants(file).tenants:
        path = Path(tenant.instance_path) / "app.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            assert db.execute("SELECT version_num FROM alembic_version").fetchone()


def run_baseline(file: Path) -> float:
    """Wall time of :func:`read_revisions` in a new process, as the command runs in one."""
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--baseline", str(file)], check=True, cwd=ROOT)
    return time.perf_counter() - started


def instructions(command: list[str], root: Path) -> int:
    """Instructions a command executes in user space (valgrind's callgrind): unlike its wall
    time, the same however busy the machine is."""
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as folder:
        out = Path(folder) / "callgrind.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
            cwd=root,
            capture_output=True,
            check=True,
        )
        totals = [line for line in out.read_text().splitlines() if line.startswith("totals:")]
        return int(totals[-1].split()[1])


def instruction_rows(
    work: Path, counts: tuple[int, int], labels: dict[str, str], other: Path | None
) -> list[str]:
    """One table row per side: instructions per tenant, (large - small) / difference."""
    small, large = counts
    files = {n: make_tenants(work / f"callgrind-{n}", n) for n in counts}
    migrate = [sys.executable, "-m", "dispatcher", "migrate", "--all", "-f"]
    sides = {
        "baseline": ([sys.executable, __file__, "--baseline"], ROOT),
        "jobs 1": (migrate, ROOT),
    }
    if other is not None:
        sides["other"] = (migrate, other)
    rows = []
    for side, (command, root) in sides.items():
        at = {n: instructions([*command, str(files[n])], root) for n in counts}
        per_tenant = (at[large] - at[small]) / (large - small)
        rows.append(f"| {labels[side]} | {per_tenant / 1000:,.0f}k |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--small", type=int, default=100, help="the smaller tenant count")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare-with", type=Path, help="another checkout, run as a side")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per tenant under valgrind (100 and 400 tenants)",
    )
    parser.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)  # the baseline's run
    args = parser.parse_args()
    if args.baseline:
        read_revisions(args.baseline)
        return
    small, large = args.small, args.tenants
    load = os.getloadavg()[0]
    sides: dict[str, Callable[[Path], float]] = {
        "baseline": run_baseline,
        "jobs 1": lambda file: run_migrate(file, 1),
        "jobs 2": lambda file: run_migrate(file, 2),
    }
    labels = {
        "baseline": "baseline: read each revision (`sqlite3`), nothing else",
        "jobs 1": "`migrate --all`",
        "jobs 2": "`migrate --all --jobs 2`",
    }
    other = args.compare_with.resolve() if args.compare_with else None
    if other is not None:
        sides["other"] = lambda file: run_migrate(file, 1, other)
        labels["other"] = f"`migrate --all` from {other}"
    counted = []
    totals: dict[str, list[float]] = {side: [] for side in sides}
    marginals: dict[str, list[float]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as work:
        files = {n: make_tenants(Path(work) / str(n), n) for n in (small, large)}
        for measure in sides.values():  # warm-up: first opens of new files, the page cache
            measure(files[small]), measure(files[large])
        names = list(sides)
        for i in range(args.rounds):
            # Each round starts with another side: a side runs after each of the others in
            # turn (what ran just before it, an I/O-heavy side, shows in its figure).
            for side in names[i % len(names) :] + names[: i % len(names)]:
                at_small, at_large = sides[side](files[small]), sides[side](files[large])
                totals[side].append(at_large)
                marginals[side].append((at_large - at_small) / (large - small) * 1000)
        if args.instructions:
            counted = instruction_rows(Path(work), (100, 400), labels, other)
    rows = []
    for side, times in totals.items():
        ratios = [m / b for m, b in zip(marginals[side], marginals["baseline"], strict=True)]
        rows.append(
            f"| {labels[side]} | {spread(times)} | {spread(marginals[side], 2)} "
            f"| {spread(ratios)}x |"
        )
    section = "\n".join(
        [
            HEADING,
            "",
            f"SQLite tenants of the notes app, all at head. Total: wall time of the whole "
            f"command for {large} tenants (process start, loading the file, every tenant). Per "
            f"tenant: the marginal cost, (time at {large} - time at {small}) / {large - small}, "
            f"so that start-up cancels out. Median (min-max) over {args.rounds} interleaved "
            f"rounds. Machine: {machine()}, load average at the start and the end: {load:.1f}, "
            f"{os.getloadavg()[0]:.1f}. Anchor: django-tenants, 900 tenants in 12 minutes "
            "(800 ms per tenant).",
            "",
            f"| what | total for {large}, s | per tenant, ms | vs baseline (per tenant) |",
            "|---|---|---|---|",
            *rows,
            "",
            "A tenant at head is told without building its app: the migrations folder by the "
            "`<package>/migrations/` convention (no tenant code imported), its head read once, "
            "the revision read with `sqlite3` (through an SQLAlchemy engine and Alembic it "
            "costs about 1.5 ms more per tenant). With `--jobs`, the tenants at head are told "
            "in the main process and no worker is started when none is behind.",
            *(
                [
                    "",
                    "Instructions per tenant in user space (valgrind's callgrind, the same "
                    "however busy the machine is; system calls not counted), (at 400 tenants - "
                    "at 100) / 300:",
                    "",
                    "| what | instructions per tenant |",
                    "|---|---|",
                    *counted,
                ]
                if counted
                else []
            ),
        ]
    )
    print(section)
    write_section(HEADING, section)


if __name__ == "__main__":
    main()
