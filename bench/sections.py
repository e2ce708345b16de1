"""The sections of docs/benchmarks.md that issue 15's benchmarks write, from bench/results/.

Each section is rebuilt from the saved figures of the latest run (``after``) and of main before
issue 15 (``before``), so re-running one benchmark rewrites its section and the summary
without re-running the others::

    instructions_section()     # after bench/bench_instructions.py saved its figures
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.instruction_sides import SIDES
from bench.report import write_section
from bench.results import load

INSTRUCTIONS = "## Instructions per request (bench/bench_instructions.py)"


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _k(ir: float) -> str:
    return f"{ir / 1000:,.1f}k"


def _spread_k(values: list[float]) -> str:
    return f"{_k(_median(values))} ({_k(min(values))}-{_k(max(values))})"


def overheads(ir: dict[str, list[float]]) -> dict[str, tuple[float, float, float, float]]:
    """Per side that ends in the tenant's app: its instructions beyond that app called alone,
    as a median over the rounds (each side against its own baseline of the same round: the
    app in the same process), that as % of the app, and the smallest and largest round."""
    found = {}
    for side in SIDES:
        if not side.routed or side.name == "app" or side.name not in ir:
            continue
        base = ir.get(f"{side.name}/app") or ir.get("app")
        if base is None:
            continue
        rounds = [s - b for s, b in zip(ir[side.name], base, strict=False)]
        over = _median(rounds)
        found[side.name] = (over, 100 * over / _median(base), min(rounds), max(rounds))
    return found


def _provenance(data: dict[str, Any]) -> str:
    return f"commit {data['commit']}, {data['date']}"


def instructions_section() -> str:
    after, before = load("instructions"), load("instructions", before=True)
    if after is None:
        raise SystemExit("no bench/results/instructions.json: run bench/bench_instructions.py")
    ir = after["ir"]
    old = before["ir"] if before else {}
    now_extra, old_extra = overheads(ir), overheads(old)
    settings = after["settings"]
    floor = now_extra.get("middleware", (0.0, 0.0))[0]
    lines = [
        INSTRUCTIONS,
        "",
        "Instructions (valgrind callgrind `Ir`) per request, each WSGI callable called in process "
        "as a server calls it (a prepared environ copied per request, the body consumed and "
        "closed); every tenant is bench/tiny.py, whose `GET /` answers `ok`, so the "
        "dispatcher's share shows. Each side runs, after a warm-up, rounds of four segments "
        f"of {settings['k1']}, {settings['k2']}, {settings['k2']} and {settings['k1']} "
        "requests, each after a full `gc.collect()`; a round gives (Ir(long) - Ir(short)) / "
        "(difference in requests), so boot, warm-up and the measuring itself cancel out; "
        f"median (min-max) over {settings['rounds']} rounds. A side that ends in the tenant's "
        "app is compared round by round with that app called directly in the same process. The "
        "dispatcher runs as wsgi.py builds it (`create_dispatcher`), 10,000 lazy tenants, half "
        "by path and half by subdomain, one of each warm; eviction on means `idle_timeout: 900` "
        "and `max_live_apps: 1000`. Instruction counts do not depend on the machine's load: "
        "two runs agree within a few hundred instructions per request. "
        f"Now: {_provenance(after)}; before: "
        + (f"main before issue 15, {_provenance(before)}." if before else "not recorded."),
        "",
        "| side | before: beyond the app alone | now: Ir per request | **now: beyond the app "
        "alone**, range over rounds | x `DispatcherMiddleware`'s |",
        "|---|---|---|---|---|",
    ]
    for side in SIDES:
        if not side.routed or side.name not in ir:
            continue
        if side.name == "app":
            was = f"{_k(_median(old['app']))} Ir a request" if "app" in old else ""
            lines.append(f"| {side.label} | {was} | {_spread_k(ir['app'])} | | |")
            continue
        was = ""
        if side.name in old_extra:
            was = f"{_k(old_extra[side.name][0])} ({old_extra[side.name][1]:.1f}%)"
        now, ratio = "", ""
        if side.name in now_extra:
            extra, percent, low, high = now_extra[side.name]
            now = f"**{_k(extra)} ({percent:.2f}%)**, {_k(low)}-{_k(high)}"
            ratio = f"{extra / floor:.1f}x" if floor else ""
        lines.append(f"| {side.label} | {was} | {_spread_k(ir[side.name])} | {now} | {ratio} |")
    for reference, title in (("404", "the 404"), ("host-hit", "the same host")):
        rows = [
            s
            for s in SIDES
            if not s.routed
            and s.name in ir
            and s.name.startswith("host" if reference == "host-hit" else ("health", "404"))
        ]
        if not rows:
            continue
        lines += [
            "",
            f"| request | before: Ir per request | before: vs {title} | now: Ir per request "
            f"| **now: vs {title}** |",
            "|---|---|---|---|---|",
        ]
        for side in rows:
            cells = []
            for data in (old, ir):
                if side.name in data and reference in data:
                    value = _median(data[side.name])
                    cells += [_k(value), f"{value / _median(data[reference]):.2f}x"]
                else:
                    cells += ["", ""]
            cells[3] = f"**{cells[3]}**" if cells[3] else ""
            lines.append(f"| {side.label} | {' | '.join(cells)} |")
    lines += [
        "",
        "Where a side's instructions go, function by function: "
        "`.venv/bin/python bench/bench_instructions.py --annotate path` (any side).",
    ]
    section = "\n".join(lines)
    write_section(INSTRUCTIONS, section)
    return section


STALLS = "## Stalls and contention in a worker (bench/bench_stalls.py)"


def _spread(values: list[float], digits: int = 1) -> str:
    return f"{_median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def _ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def _when(data: dict[str, Any] | None) -> str:
    return _provenance(data) if data else "not measured"


def stalls_section() -> str:
    """Threads with eviction on vs off, a request during a reload, a full collection."""
    lines = [
        STALLS,
        "",
        "In process, the dispatcher built as wsgi.py builds it (`create_dispatcher`), timed "
        "from the caller's side; median (min-max) over rounds, the baseline of each figure "
        "measured in the same run; `before` is main before issue 15. This machine is shared: "
        "wall-clock figures move with its load, so each table also gives a figure the load "
        "does not change (CPU time; a request's time less its waits for a CPU, from the "
        "thread's `/proc/thread-self/schedstat`).",
    ]
    threads, old = load("threads"), load("threads", before=True)
    if threads:
        settings = threads["settings"]
        lines += [
            "",
            f"**Threads on one tenant** ({_when(threads)}): N threads call one tenant's `GET /` "
            "(bench/tiny.py, 10,000 lazy tenants) as fast as they can, through a dispatcher "
            "with eviction on (`idle_timeout: 900`, `max_live_apps: 1000`) and through one "
            f"without, both in one process, in {settings['seconds']:g}-second turns "
            f"alternating between them, {settings['rounds']} rounds; the ratio is taken turn "
            "pair by turn pair.",
            "",
            "| threads | eviction off, req/s | eviction on, req/s | **on / off** "
            "| on / off, per CPU second | before: on / off | before: per CPU second |",
            "|---|---|---|---|---|---|---|",
        ]
        for n, rates in threads["figures"].items():
            was = ["", ""]
            if old and n in old["figures"]:
                o = old["figures"][n]
                was = [
                    _spread(_ratios(o["on"], o["off"]), 2) + "x",
                    _spread(_ratios(o["on_cpu"], o["off_cpu"]), 2) + "x",
                ]
            lines.append(
                f"| {n} | {_spread(rates['off'], 0)} | {_spread(rates['on'], 0)} "
                f"| **{_spread(_ratios(rates['on'], rates['off']), 2)}x** "
                f"| {_spread(_ratios(rates['on_cpu'], rates['off_cpu']), 2)}x "
                f"| {was[0]} | {was[1]} |"
            )
    reload, old = load("reload"), load("reload", before=True)
    if reload:
        lines += [
            "",
            f"**A request while the tenants file changes** ({_when(reload)}): one thread "
            "requests a tenant in a loop (bench/tiny.py, 10,000 lazy tenants); the file is "
            "touched (its modification time only) or edited (a tenant added, or removed again), "
            "and the requests that start in the next 4 seconds are compared with those of 4 "
            "quiet seconds of the same run, "
            f"{reload['settings']['reload_rounds']} rounds. The edit is checked to have been "
            "applied. Only the client's side is timed: a reload on a request or on a thread of "
            "its own counts by how long a request waits.",
            "",
            "| the file | longest request, ms | **less its waits for a CPU, ms** | p99, ms "
            "| requests in the window | before: longest, ms | before: less CPU waits, ms |",
            "|---|---|---|---|---|---|---|",
        ]
        figures = reload["figures"]
        for action, label in (("quiet", "untouched"), ("touch", "touched"), ("edit", "edited")):
            windows = figures[action]
            was = ["", ""]
            if old:
                o = old["figures"][action]
                was = [
                    _spread([w["max"] * 1000 for w in o]),
                    _spread([w["max_ours"] * 1000 for w in o]),
                ]
            lines.append(
                f"| {label} | {_spread([w['max'] * 1000 for w in windows])} "
                f"| **{_spread([w['max_ours'] * 1000 for w in windows])}** "
                f"| {_spread([w['p99'] * 1000 for w in windows], 2)} "
                f"| {_spread([w['requests'] for w in windows], 0)} | {was[0]} | {was[1]} |"
            )
    collect, old = load("gc"), load("gc", before=True)
    if collect:
        figures = collect["figures"]
        n = collect["settings"]["gc_tenants"]
        lines += [
            "",
            f"**A full garbage collection** ({_when(collect)}): one `gc.collect()` (median of "
            f"3) in a worker with {n:,} lazy notes tenants (tenants/notes), right after boot and "
            "after each tenant answered one request (its app built after boot); the pause in "
            "wall time and in the thread's CPU time.",
            "",
            "| the worker | objects the collector tracks | pause, ms | **pause, CPU ms** "
            "| before: pause, CPU ms |",
            "|---|---|---|---|---|",
        ]
        for key, label in (("boot", "after boot"), ("built", f"{n:,} apps built after boot")):
            was = f"{old['figures'][f'{key}_cpu_ms']:.1f}" if old else ""
            lines.append(
                f"| {label} | {figures[f'{key}_objects']:,} | {figures[f'{key}_ms']:.1f} "
                f"| **{figures[f'{key}_cpu_ms']:.1f}** | {was} |"
            )
    lines += _tick_lines()
    section = "\n".join(lines)
    write_section(STALLS, section)
    return section


def _tick_lines() -> list[str]:
    """The once-a-second background work by tenant count (its ``before`` is the commit that
    measured it, named: main before that work was made to follow changes only)."""
    tick, old = load("tick"), load("tick", before=True)
    if not tick:
        return []
    figures = tick["figures"]
    base = figures[min(figures, key=int)]["quiet"]
    lines = [
        "",
        f"**The once-a-second background work** ({_when(tick)}): `Dispatcher.tick()` (the "
        "tenants file and the holds looked at, idle apps, failed builds, the metrics written) "
        "in a worker with N lazy tenants of bench/tiny.py, 10 of which have had requests, in "
        "the CPU time of the thread that runs it (it holds the interpreter lock meanwhile), "
        "median (min-max) of 20 ticks: with nothing changed, and with one tenant built (its "
        "state changed) before each tick. The baseline is the smallest file, in the same run"
        + (f"; before: {_provenance(old)}." if old else "."),
        "",
        "| tenants | nothing changed, CPU ms | **vs 100 tenants** | a tenant built each tick, "
        "CPU ms | before: nothing changed, CPU ms | before: a tenant built, CPU ms |",
        "|---|---|---|---|---|---|",
    ]
    for count, spent in figures.items():
        was = ["", ""]
        if old and count in old["figures"]:
            was = [_spread(old["figures"][count][k], 3) for k in ("quiet", "busy")]
        ratio = _median(spent["quiet"]) / _median(base)
        lines.append(
            f"| {int(count):,} | {_spread(spent['quiet'], 3)} | **{ratio:.1f}x** "
            f"| {_spread(spent['busy'], 3)} | {was[0]} | {was[1]} |"
        )
    return lines


COSTS = "## What grows with the tenant count, and the test plugin (bench/bench_costs.py)"


def migrate_marginal(figures: dict[str, Any], side: str) -> list[float]:
    """ms per tenant beyond the smaller file, round by round."""
    small, large = figures["sizes"]
    pairs = zip(figures[side][str(small)], figures[side][str(large)], strict=True)
    return [(b - a) / (large - small) * 1000 for a, b in pairs]


def costs_section() -> str:
    lines = [
        COSTS,
        "",
        "Median (min-max) over alternating rounds; `before` is main before issue 15.",
    ]
    migrate, old = load("migrate"), load("migrate", before=True)
    if migrate:
        figures = migrate["figures"]
        small, large = figures["sizes"]
        lines += [
            "",
            f"**`migrate --all` with nothing to apply** ({_when(migrate)}): the whole command "
            f"(`python -m dispatcher -f ... migrate --all`, a new process) on {small:,} and on "
            f"{large:,} notes tenants whose databases are at head, alternating; a tenant's "
            f"marginal cost is the difference over {large - small:,}. The baseline is the least "
            "any tool could do: open each database and read its revision.",
            "",
            f"| what | {small:,} tenants, s | {large:,} tenants, s | **per tenant, ms** "
            "| before: per tenant, ms |",
            "|---|---|---|---|---|",
        ]
        for side, label in (
            ("migrate", "`migrate --all`"),
            ("baseline", "baseline: read each revision"),
        ):
            was = _spread(migrate_marginal(old["figures"], side), 2) if old else ""
            lines.append(
                f"| {label} | {_spread(figures[side][str(small)], 2)} "
                f"| {_spread(figures[side][str(large)], 2)} "
                f"| **{_spread(migrate_marginal(figures, side), 2)}** | {was} |"
            )
    plugin, old = load("plugin"), load("plugin", before=True)
    if plugin:
        lines += [
            "",
            f"**The test plugin, per test** ({_when(plugin)}): setup + teardown of `client` for "
            "one tenant of the notes app, median over a run's tests (the first, which carries "
            "imports and the template, left out); the projects and fixtures of "
            "bench/bench_plugin.py: `dispatcher.testing` against the plain fixture (build the "
            "app, `create_all()` per test).",
            "",
            "| backend | plugin, ms per test | plain fixture, ms per test | **plain / plugin** "
            "| before: plugin, ms | before: plain / plugin |",
            "|---|---|---|---|---|---|",
        ]
        for backend, r in plugin["figures"].items():
            cells = ["", ""]
            if old and backend in old["figures"]:
                o = old["figures"][backend]
                cells = [
                    _spread(o["plugin"], 2),
                    _spread(_ratios(o["baseline"], o["plugin"]), 2) + "x",
                ]
            lines.append(
                f"| {backend} ({r['tests']} tests a run) | {_spread(r['plugin'], 2)} "
                f"| {_spread(r['baseline'], 2)} "
                f"| **{_spread(_ratios(r['baseline'], r['plugin']), 2)}x** "
                f"| {cells[0]} | {cells[1]} |"
            )
    boot, old = load("boot"), load("boot", before=True)
    if boot:
        figures = boot["figures"]
        lines += [
            "",
            f"**Many lazy tenants on one node** ({_when(boot)}): uWSGI with the project's "
            "uwsgi.ini (1 process, 1 thread, lazy-apps); boot is the time from starting it "
            "until `GET /_dispatcher/health` answers, RSS the worker's `VmRSS` then, and "
            "again once its background thread has written its metrics for the first time "
            "(every tenant's state: the worker as it then stays while idle). Notes tenants by "
            "path, all lazy; the baseline is 1 lazy tenant, in the same rounds.",
            "",
            "| tenants | boot, s | worker RSS, MiB | after its first flush, MiB "
            "| before: boot, s | before: RSS, MiB |",
            "|---|---|---|---|---|---|",
        ]
        for n in figures["sizes"]:
            cells = ["", ""]
            if old and str(n) in old["figures"]["boot_s"]:
                cells = [
                    _spread(old["figures"]["boot_s"][str(n)], 2),
                    _spread(old["figures"]["rss_mib"][str(n)]),
                ]
            flushed = figures.get("rss_flushed_mib", {}).get(str(n))
            lines.append(
                f"| {n:,} | **{_spread(figures['boot_s'][str(n)], 2)}** "
                f"| **{_spread(figures['rss_mib'][str(n)])}** "
                f"| **{_spread(flushed) if flushed else '-'}** | {cells[0]} | {cells[1]} |"
            )
    section = "\n".join(lines)
    write_section(COSTS, section)
    return section
