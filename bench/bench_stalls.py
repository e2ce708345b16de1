"""Stalls and contention a worker sees (issue 15), timed in process against a baseline.

Run from the repository root (about 2 minutes; part of ``make bench``)::

    .venv/bin/python bench/bench_stalls.py [--only threads,reload,gc] [--rounds 40] [--no-docs]

Each measurement runs in a fresh interpreter that builds the dispatcher as wsgi.py does
(``create_dispatcher``) and calls it in process, as a server's worker threads would:

- ``threads``: 4 threads call one tenant's ``GET /`` as fast as they can, through a dispatcher
  with eviction on (``idle_timeout``, ``max_live_apps``) and through the same tenants without;
  requests/s on / off, in 0.15-second turns alternating between the two (both alive in
  one process, so the machine's drift hits both); 10,000 lazy tenants of bench/tiny.py. The
  same with 1 thread, for scale.
- ``reload``: one thread requests a tenant in a loop while the 10,000-tenant file is touched
  (its modification time only) or edited (a tenant added, then removed), and the longest and
  99th-percentile latency of the requests in the 4 seconds after the change are compared with
  the same figures over 4 quiet seconds of the same run. Only the client's side is timed:
  whether the reload runs on a request or on a thread of its own, what counts is how long a
  request waits.
- ``gc``: one full ``gc.collect()`` with 1,000 lazy notes tenants built after boot (each was
  requested once), against the same right after boot; median of 3 collections.
- ``tick``: the once-a-second background work (``Dispatcher.tick``: the tenants file and
  holds looked at, idle apps, failed builds, the metrics written), in CPU time, with 100,
  10,000 and 100,000 lazy tenants of which 10 have had requests: with nothing changed, and
  with one tenant built (a state change) before each tick; median of 20 ticks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.instruction_sides import tenants_file
from bench.issue15 import summary_section
from bench.report import ROOT, spread
from bench.results import save
from bench.sections import stalls_section

BENCHMARKS = ("threads", "reload", "gc", "tick")
#: Tenant counts of ``tick``: the smallest is the baseline.
TICK_COUNTS = (100, 10_000, 100_000)
#: Seconds after a change to the file whose requests count (the reload check runs once a second).
WINDOW = 4.0


def get(app: Callable[..., Any], path: str, host: str = "127.0.0.1") -> str:
    """One ``GET`` through a WSGI callable, body consumed and closed; its status."""
    from werkzeug.test import EnvironBuilder

    seen: list[str] = []
    environ = EnvironBuilder(path=path, base_url=f"http://{host}/").get_environ()
    body = app(environ, lambda status, headers, exc_info=None: seen.append(status))
    b"".join(body)
    getattr(body, "close", lambda: None)()
    return seen[0]


def loop(app: Callable[..., Any], environ: dict[str, Any], until: Callable[[], bool]) -> int:
    """Requests until ``until()``; how many."""
    count = 0

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        return None

    while not until():
        body = app(dict(environ), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        count += 1
    return count


# --- threads -----------------------------------------------------------------------------------


def turn(
    app: Callable[..., Any], environ: dict[str, Any], threads: int, seconds: float
) -> tuple[float, float]:
    """``threads`` threads call ``app`` for ``seconds``: requests per second, and per second of
    the process's CPU time (which other processes on the machine do not change)."""
    deadline = time.perf_counter() + seconds
    counts = [0] * threads

    def work(n: int) -> None:
        counts[n] = loop(app, environ, lambda: time.perf_counter() >= deadline)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    started, cpu = time.perf_counter(), time.process_time()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return sum(counts) / wall, sum(counts) / cpu


def threads_child(work: Path, rounds: int, seconds: float) -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    from dispatcher import create_dispatcher

    sides = {
        "off": create_dispatcher(tenants_file(work, 10_000, "mixed")),
        "on": create_dispatcher(tenants_file(work, 10_000, "evict")),
    }
    environ = EnvironBuilder(path="/t00000/", base_url="http://127.0.0.1/").get_environ()
    for app in sides.values():
        assert get(app, "/t00000/").startswith("200")
    rates: dict[str, dict[str, list[float]]] = {}
    for threads in (1, 4):
        found = rates[str(threads)] = {"on": [], "off": [], "on_cpu": [], "off_cpu": []}
        for i in range(rounds):
            for side in ("on", "off") if i % 2 == 0 else ("off", "on"):
                wall, cpu = turn(sides[side], environ, threads, seconds)
                found[side].append(wall)
                found[f"{side}_cpu"].append(cpu)
    return rates


# --- reload ------------------------------------------------------------------------------------


def reload_child(work: Path, rounds: int) -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    from dispatcher import create_dispatcher

    file = tenants_file(work, 10_000, "mixed")
    original = file.read_text()
    app = create_dispatcher(file)
    environ = EnvironBuilder(path="/t00000/", base_url="http://127.0.0.1/").get_environ()
    #: (started, seconds, of which waiting for a CPU): the last is the machine's, not ours.
    latencies: list[tuple[float, float, float]] = []
    stop = threading.Event()

    def client() -> None:
        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            return None

        # This thread's scheduler statistics: the second figure is the time it has spent
        # runnable but waiting for a CPU, which other processes on a busy machine cause.
        schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)

        def waited() -> int:
            return int(os.pread(schedstat, 100, 0).split()[1])

        while not stop.is_set():
            before = waited()
            started = time.perf_counter()
            body = app(dict(environ), start_response)
            b"".join(body)
            getattr(body, "close", lambda: None)()
            elapsed = time.perf_counter() - started
            latencies.append((started, elapsed, (waited() - before) / 1e9))
        os.close(schedstat)

    thread = threading.Thread(target=client)
    thread.start()
    windows: dict[str, list[tuple[float, float]]] = {"quiet": [], "touch": [], "edit": []}
    added = False
    try:
        time.sleep(2)  # past the first reload check
        for i in range(rounds):
            for action in ("quiet", "touch", "edit"):
                started = time.perf_counter()
                if action == "touch":
                    now = time.time_ns()
                    os.utime(file, ns=(now, now))
                elif action == "edit":
                    added = not added
                    extra = "  tadded: {path: /tadded}\n"
                    file.write_text(original + extra if added else original)
                time.sleep(WINDOW)
                windows[action].append((started, time.perf_counter()))
                if action == "edit":  # the edit was applied: the added tenant answers, or not
                    want = "200" if added else "404"
                    deadline = time.monotonic() + 30
                    while not get(app, "/tadded/").startswith(want):
                        if time.monotonic() > deadline:
                            raise SystemExit(f"edit {i}: /tadded/ never answered {want}")
                        time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    result: dict[str, Any] = {}
    for action, spans in windows.items():
        result[action] = []
        for start, end in spans:
            inside = sorted(s for t, s, _ in latencies if start <= t < end)
            ours = max(s - w for t, s, w in latencies if start <= t < end)
            p99 = inside[int(0.99 * (len(inside) - 1))]
            result[action].append(
                {"max": inside[-1], "p99": p99, "max_ours": ours, "requests": len(inside)}
            )
    return result


# --- gc ----------------------------------------------------------------------------------------


def gc_child(work: Path, tenants: int) -> dict[str, Any]:
    import gc

    from bench.fixtures import notes_tenants
    from dispatcher import create_dispatcher

    file = notes_tenants(work / "gc", tenants)
    app = create_dispatcher(file)

    def pause() -> tuple[float, float]:
        """One full collection, median of 3: wall ms, and ms of this thread's CPU time."""
        walls, cpus = [], []
        for _ in range(3):
            started, cpu = time.perf_counter(), time.thread_time()
            gc.collect()
            walls.append(time.perf_counter() - started)
            cpus.append(time.thread_time() - cpu)
        return statistics.median(walls) * 1000, statistics.median(cpus) * 1000

    result: dict[str, Any] = {"boot_objects": len(gc.get_objects())}
    result["boot_ms"], result["boot_cpu_ms"] = pause()
    for i in range(tenants):
        status = get(app, f"/t{i:05d}/")
        if not status.startswith("302"):
            raise SystemExit(f"/t{i:05d}/ answered {status}")
    result["built_ms"], result["built_cpu_ms"] = pause()
    result["built_objects"] = len(gc.get_objects())
    return result


# --- tick --------------------------------------------------------------------------------------


def tick_child(work: Path) -> dict[str, Any]:
    from bench.instruction_sides import name
    from dispatcher import create_dispatcher

    def ticks(dispatcher: Any, build: bool) -> list[float]:
        """CPU ms of this thread for each of 20 ticks; with ``build``, a lazy tenant is built
        (one request) before each."""
        spent = []
        for i in range(20):
            if build:
                get(dispatcher, f"/{name(10 + i)}/")
            cpu = time.thread_time()
            dispatcher.tick()
            spent.append((time.thread_time() - cpu) * 1000)
        return spent

    figures: dict[str, Any] = {}
    for count in TICK_COUNTS:
        dispatcher = create_dispatcher(tenants_file(work, count, "mixed"))
        if dispatcher._ticker is not None:  # the ticks measured are the only ones
            dispatcher._ticker.stop()
        for i in range(10):  # the first half of a mixed file is path tenants
            get(dispatcher, f"/{name(i)}/")
        dispatcher.tick()
        figures[str(count)] = {
            "quiet": ticks(dispatcher, build=False),
            "busy": ticks(dispatcher, build=True),
        }
        dispatcher.close()
    return figures


# --- the parent --------------------------------------------------------------------------------


def child(name: str, args: argparse.Namespace, work: Path) -> Any:
    command = [sys.executable, __file__, "--child", name, "--work", str(work)]
    command += ["--rounds", str(args.rounds), "--seconds", str(args.seconds)]
    command += ["--gc-tenants", str(args.gc_tenants), "--reload-rounds", str(args.reload_rounds)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(results: dict[str, Any]) -> str:
    lines = []
    if "threads" in results:
        for threads, rates in results["threads"].items():
            ratio = [a / b for a, b in zip(rates["on"], rates["off"], strict=True)]
            cpu = [a / b for a, b in zip(rates["on_cpu"], rates["off_cpu"], strict=True)]
            lines.append(
                f"{threads} thread(s): eviction on {spread(rates['on'], 0)} req/s, off "
                f"{spread(rates['off'], 0)} req/s, on/off {spread(ratio, 2)}x "
                f"(per CPU second {spread(cpu, 2)}x)"
            )
    if "reload" in results:
        for action, windows in results["reload"].items():
            worst = [w["max"] * 1000 for w in windows]
            ours = [w["max_ours"] * 1000 for w in windows]
            p99 = [w["p99"] * 1000 for w in windows]
            lines.append(
                f"{action}: longest {spread(worst)} ms ({spread(ours)} ms less the waits for "
                f"a CPU), p99 {spread(p99, 2)} ms"
            )
    if "tick" in results:
        for count, spent in results["tick"].items():
            lines.append(
                f"tick, {int(count):,} tenants: {spread(spent['quiet'], 3)} ms CPU with nothing "
                f"changed, {spread(spent['busy'], 3)} ms with a tenant built each tick"
            )
    if "gc" in results:
        r = results["gc"]
        lines.append(
            f"gc.collect(): {r['built_ms']:.1f} ms ({r['built_cpu_ms']:.1f} ms CPU) with the "
            f"tenants built ({r['built_objects']:,} objects), {r['boot_ms']:.1f} ms after boot"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="a subset, by name")
    parser.add_argument("--rounds", type=int, default=40, help="threads: interleaved rounds")
    parser.add_argument("--seconds", type=float, default=0.15, help="threads: seconds a turn")
    parser.add_argument("--reload-rounds", type=int, default=3, help="reload: rounds")
    parser.add_argument("--gc-tenants", type=int, default=1000, help="gc: tenants built")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    if args.child:
        runners: dict[str, Callable[[], Any]] = {
            "threads": lambda: threads_child(args.work, args.rounds, args.seconds),
            "reload": lambda: reload_child(args.work, args.reload_rounds),
            "gc": lambda: gc_child(args.work, args.gc_tenants),
            "tick": lambda: tick_child(args.work),
        }
        print(json.dumps(runners[args.child]()))
        return
    only = [b for b in args.only.split(",") if b]
    if unknown := set(only) - set(BENCHMARKS):
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {BENCHMARKS}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stalls-") as work:
        for name in only:
            started = time.monotonic()
            results[name] = child(name, args, Path(work))
            print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(summary(results))
    if not args.no_docs:
        keep = ("rounds", "seconds", "gc_tenants", "reload_rounds")
        settings = {k: v for k, v in vars(args).items() if k in keep}
        for name, figures in results.items():
            save(name, {"settings": settings, "figures": figures})
        stalls_section()
        summary_section()


if __name__ == "__main__":
    main()
