"""Instructions per request (valgrind callgrind): the dispatcher's own cost, beside werkzeug's.

Run from the repository root (``make bench-instructions``: 5 to 8 minutes; ``--quick``: under
one, four sides)::

    .venv/bin/python bench/bench_instructions.py [--quick] [--sides path,host] [--no-docs]
    .venv/bin/python bench/bench_instructions.py --annotate path     # where they go

Each side is a WSGI callable called in process, as a server calls it: a prepared environ
(copied per request), a ``start_response``, the body consumed and closed. Every tenant runs
bench/tiny.py (``GET /`` answers ``ok``), so the dispatcher's share of a request shows. Sides:

- ``app``: the tenant's app alone (built by the dispatcher's ``build_app``), called with the
  environ the dispatcher would hand it: the baseline;
- ``middleware``: werkzeug's ``DispatcherMiddleware`` alone, that app mounted at 10,000
  prefixes: the floor any path routing pays;
- ``path``, ``host``: the dispatcher (``create_dispatcher``, as wsgi.py) with 10,000 lazy
  tenants, half by path and half by subdomain, one tenant of each kind warm;
- ``path-evict``, ``host-evict``: the same with eviction on (``idle_timeout: 900``,
  ``max_live_apps: 1000``);
- ``404``, ``health``: an unknown path and ``GET /_dispatcher/health`` at 10,000 tenants, and
  ``health-100``, ``health-100000`` at 100 and 100,000 tenants;
- ``host-hit``, ``host-miss``: 10,000 host tenants in maintenance (a 503 without building an
  app), the same host every time, or each host in turn (more hosts than the host cache holds;
  every host is asked once before counting: a tenant's first request in a worker also makes
  its in-flight count, once, which is not the lookup measured here).

A run of every side writes docs/benchmarks.md and bench/results/instructions.json; ``--quick``,
``--sides`` and ``--annotate`` only print.

The sides of one tenants file share one process, which runs under ``valgrind --tool=callgrind``
with instrumentation off while it boots and warms up (bench/callgrind.py switches it on).
Then each side, in turn, runs rounds of four segments of K1, K2, K2 and K1 requests, each
after a full ``gc.collect()`` (so every segment starts from the same collector state), callgrind
dumping after each. A round gives ``(Ir(K2) + Ir(K2) - Ir(K1) - Ir(K1)) / 2 (K2 - K1)``: the
loop, the dumps and anything else constant cancel out, and so does the alternation of the
allocator's state from one segment to the next (each size runs once at an even and once at an
odd position). Each side that ends in the tenant's app is measured against that app called
directly in the same process, round by round. The table gives the median and the range over
the rounds; two runs agree within a few hundred instructions per request (0.1%).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import annotate, callgrind
from bench.instruction_child import child
from bench.instruction_sides import BY_NAME, QUICK, SIDES, Side, tenants_file
from bench.issue15 import summary_section
from bench.report import ROOT
from bench.results import save
from bench.sections import instructions_section, overheads

# --- The parent: files, processes, figures ---------------------------------------------------


def run_child(sides: list[Side], args: argparse.Namespace, work: Path, out: Path) -> Any:
    file = tenants_file(work, sides[0].tenants, sides[0].file)
    program = [sys.executable, __file__, "--child", "--file", str(file)]
    program += ["--sides", ",".join(s.name for s in sides), "--warmup", str(args.warmup)]
    program += ["--rounds", str(args.rounds), "--k1", str(args.k1), "--k2", str(args.k2)]
    program += ["--annotate-requests", str(args.annotate_requests)]
    stdout = callgrind.run(program, out, cwd=ROOT)
    report = json.loads(stdout.strip().splitlines()[-1])
    if not report["on_valgrind"]:
        raise SystemExit("the child did not see valgrind: client requests are not working")
    for side, status in report["statuses"].items():
        expected = str(BY_NAME[side].status)
        if not status.startswith(expected):
            raise SystemExit(f"side {side}: answered {status}, expected {expected}")
    return report


def per_request(segments: list[tuple[int, int]]) -> list[float]:
    """One estimate of a request's instructions per round of four segments ``(k, Ir)``:
    K1, K2, K2, K1."""
    estimates = []
    for i in range(0, len(segments), 4):
        (k1, a), (k2, b), (_, c), (_, d) = segments[i : i + 4]
        estimates.append((b + c - a - d) / (2 * (k2 - k1)))
    return estimates


def measure(sides: list[Side], args: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    """Per side, the estimates of one request's instructions, one per round; and
    per side ending in the tenant's app, ``<side>/app``: that app's, called directly."""
    groups: dict[tuple[int, str], list[Side]] = {}
    for side in sides:
        groups.setdefault((side.tenants, side.file), []).append(side)

    def run_group(key: tuple[int, str]) -> dict[str, list[float]]:
        group = groups[key]
        out = work / f"callgrind-{key[0]}-{key[1]}"
        started = time.monotonic()
        report = run_child(group, args, work, out)
        counts = [callgrind.instructions(d) for d in callgrind.dumps(out)]
        if len(counts) != len(report["order"]):
            raise SystemExit(f"{out}: {len(counts)} dumps for {len(report['order'])} segments")
        segments: dict[str, list[tuple[int, int]]] = {}
        for (label, k), ir in zip(report["order"], counts, strict=True):
            segments.setdefault(label, []).append((k, ir))
        names = ", ".join(s.name for s in group)
        print(f"  {names}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        return {label: per_request(s) for label, s in segments.items()}

    results: dict[str, list[float]] = {}
    # The largest files first: they take longest, the others fill in beside them.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for found in pool.map(run_group, sorted(groups, key=lambda k: -k[0])):
            results.update(found)
    return results


def annotated(side: Side, args: argparse.Namespace, work: Path) -> str:
    """``--annotate``: the side's layers (exact), then its functions (approximate)."""
    args.annotate_requests = max(5 // side.weight, 1)
    args.rounds, args.k1, args.k2 = 2, 15, 45
    out = work / "annotate"
    report = run_child([side], args, work, out)
    counts = [callgrind.instructions(d) for d in callgrind.dumps(out)]
    segments, calibration, events = report["order"], report["calibration"], report["events"]
    if len(counts) != len(segments) + len(calibration) + len(events):
        raise SystemExit(f"{out}: {len(counts)} dumps, not one per segment and step")
    by_label: dict[str, list[tuple[int, int]]] = {}
    for (label, k), count in zip(segments, counts, strict=False):
        by_label.setdefault(label, []).append((k, count))
    ir = {label: per_request(s) for label, s in by_label.items()}
    overhead = annotate.hook_cost(
        [tuple(e) for e in calibration], counts[len(segments) : len(segments) + len(calibration)]
    )
    root = annotate.replay(
        [tuple(e) for e in events],
        counts[len(segments) + len(calibration) :],
        overhead,
        args.annotate_requests,
    )
    layers = annotate.layer_table(report["layers"], ir)
    if report["environs"] > 1:
        layers += (
            f"\n(by layer, every request is the first of the side's {report['environs']:,} "
            "requests, taken again; by function, they are taken in turn)"
        )
    return "\n\n".join(
        [f"side {side.name}: {side.label}", layers, annotate.function_report(root, overhead)]
    )


def table(sides: list[Side], results: dict[str, list[float]]) -> str:
    """The plain-text table the edit-measure loop reads."""
    extra = overheads(results)
    floor = extra["middleware"][0] if "middleware" in extra else None
    lines = [
        f"{'side':14} {'Ir/request':>10} {'(min-max)':>17} {'beyond the app':>15} "
        f"{'(min-max)':>13} {'%':>6} {'x DM':>5}"
    ]
    for side in sides:
        values = results[side.name]
        line = (
            f"{side.name:14} {statistics.median(values):>10,.0f} "
            f"{min(values):>8,.0f}-{max(values):<8,.0f}"
        )
        if side.name in extra:
            over, percent, low, high = extra[side.name]
            line += f" {over:>15,.0f} {low:>6,.0f}-{high:<6,.0f} {percent:>6.2f}"
            if floor:
                line += f" {over / floor:>5.1f}"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--annotate-requests", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--sides", default=",".join(s.name for s in SIDES), help="a subset (printed only)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"only {','.join(QUICK)}, fewer requests"
    )
    parser.add_argument("--annotate", metavar="SIDE", help="where one side's instructions go")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of 4 segments per side")
    parser.add_argument("--k1", type=int, default=30, help="requests in a short segment")
    parser.add_argument("--k2", type=int, default=100, help="requests in a long segment")
    parser.add_argument("--warmup", type=int, default=200, help="requests before counting")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind processes at once")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the callgrind files")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.sides = ",".join(QUICK)
        args.rounds, args.k1, args.k2 = 2, 15, 45
    if args.sides != parser.get_default("sides"):
        args.no_docs = True  # the docs compare every side of one run, never a mix of runs
    unknown = [s for s in [*args.sides.split(","), args.annotate or "app"] if s not in BY_NAME]
    if unknown:
        parser.error(f"unknown sides {unknown}; choose from {', '.join(BY_NAME)}")
    work = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    started = time.monotonic()
    try:
        if args.annotate:
            print(annotated(BY_NAME[args.annotate], args, work))
            return
        sides = [BY_NAME[s] for s in args.sides.split(",")]
        results = measure(sides, args, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(table(sides, results))
    print(f"bench_instructions: {time.monotonic() - started:.0f} s", file=sys.stderr)
    if not args.no_docs:
        settings = {k: getattr(args, k) for k in ("sides", "rounds", "k1", "k2", "warmup")}
        save("instructions", {"settings": settings, "ir": results})
        instructions_section()
        summary_section()


if __name__ == "__main__":
    main()
