"""The instruction-count benchmark's own machinery (bench/callgrind.py, bench/annotate.py).

The benchmark is what issue 15's work is judged by, so its method is tested like code: the
client requests really cut a run into segments under valgrind, the estimate cancels what is
constant, and the per-function breakdown gives each step to the function that ran it.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from bench import callgrind
from bench.annotate import APP, replay
from bench.bench_instructions import per_request
from bench.instruction_sides import tenants_file
from dispatcher import load_tenants

ROOT = Path(__file__).resolve().parent.parent


def needs_valgrind() -> None:
    if shutil.which("valgrind") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("valgrind must be installed under CI=true")
        pytest.skip("valgrind is not installed")


def test_client_requests_do_nothing_outside_valgrind() -> None:
    requests = callgrind.ClientRequests()
    assert requests.on_valgrind is False
    requests.start_instrumentation()
    requests.zero()
    requests.dump()
    requests.fast_dump()
    requests.stop_instrumentation()  # and the process is still running


def test_each_segment_is_one_dump_of_its_own_instructions(tmp_path: Path) -> None:
    """Two segments of 1,000 and 3,000 calls: two dumps, the second ~3x the first; nothing
    from before the instrumentation starts or after the last dump is in them."""
    needs_valgrind()
    program = tmp_path / "program.py"
    program.write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        + textwrap.dedent(
            """
            from bench.callgrind import ClientRequests

            def work(n):
                total = 0
                for i in range(n):
                    total += len(str(i))
                return total

            work(200_000)  # uninstrumented: not counted anywhere
            requests = ClientRequests()
            assert requests.on_valgrind
            requests.start_instrumentation()
            requests.zero()
            work(1_000)
            requests.dump()
            work(3_000)
            requests.fast_dump()
            work(200_000)  # after the last dump: only in the file written at exit
            """
        )
    )
    out = tmp_path / "callgrind"
    callgrind.run([sys.executable, str(program)], out, cwd=ROOT)
    first, second = (callgrind.instructions(d) for d in callgrind.dumps(out))
    assert 2.8 < second / first < 3.2
    assert first < 2_000_000  # 1,000 small loops, not the 200,000 of the uninstrumented part


def test_a_round_cancels_what_every_segment_costs_alike() -> None:
    """Segments cost a constant (the loop, the dumps) plus k requests, plus an amount that
    alternates with the segment's position: a round K1 K2 K2 K1 gives the request alone."""
    segments = []
    for position, k in enumerate([20, 50, 50, 20, 20, 50, 50, 20]):
        alternating = 7_000 if position % 2 else 0
        segments.append((k, 12_345 + 400 * k + alternating))
    assert per_request(segments) == [400, 400]


def test_replay_gives_each_step_to_the_function_open_before_it() -> None:
    events: list[tuple[str, str | None]] = [
        ("call", "outer"),  # the step before: root level, not a function
        ("c_call", "len"),  # outer's own work until here
        ("c_return", None),  # inside len
        ("call", APP),  # outer again
        ("return", None),  # the app: not counted
        ("return", None),  # outer again
    ]
    counts = [999, 1_100, 300, 1_200, 50_000, 700]
    root = replay(events, counts, overhead=100, requests=2)
    outer = root.children["outer"]
    assert outer.self_ir == (1_000 + 1_100 + 600) / 2
    assert outer.children["len"].self_ir == 200 / 2
    assert outer.children[APP].inclusive() == 0
    assert outer.inclusive() == (1_000 + 1_100 + 600 + 200) / 2
    assert outer.calls == 0.5


@pytest.mark.parametrize("kind", ["mixed", "evict", "hosts"])
def test_the_benchmark_tenants_files_are_valid(tmp_path: Path, kind: str) -> None:
    tenant_set = load_tenants(tenants_file(tmp_path, 10, kind))
    assert len(tenant_set.enabled) == 10
    hosts = [t for t in tenant_set.enabled if t.hosts]
    assert len(hosts) == (10 if kind == "hosts" else 5)
