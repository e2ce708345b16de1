"""What per-tenant metrics cost, in instructions (valgrind callgrind), as PERFORMANCE.md measures.

Each figure runs one workload twice under callgrind, with K1 and K2 repetitions after the same
set-up and warm-up, and divides the difference by K2 - K1: start-up and warm-up cancel out, and
the count does not depend on the machine's load::

    .venv/bin/python bench/bench_metrics.py                  # this tree only
    .venv/bin/python bench/bench_metrics.py --base /tmp/base # and a request on an older tree

Workloads (one ``--child NAME K`` process each):

- ``observe`` and ``record``: what the request thread pays; ``loop``: the same loop
  calling a no-op, to subtract.
- ``request``: one whole request through the dispatcher (100 path tenants of a trivial app,
  ``return "ok"``); with ``--base`` also on the older tree, so the difference is the hook.
- ``flush``: ``record`` + ``flush`` (once per 1,000 requests) into prometheus-client's
  multiprocess files, per request.
- ``flush_idle``: one ``flush`` with nothing pending and 100 / 1,000 tenants' states unchanged
  (the once-a-second fixed cost), as the dispatcher calls it: the routing table's view of the
  states, and no tenant named as changed.
- ``scrape``: one ``/_dispatcher/metrics`` render as the answering worker pays for it (flush,
  tidy, start the child and read its output), 2 workers' files of 20 / 200 busy tenants;
  ``merge``: what that child process does (adds up the files and formats them).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


TRIVIAL_APP = """
from flask import Flask


def create_app(tenant_config):
    app = Flask(__name__, instance_path=tenant_config.instance_path)
    app.add_url_rule("/", "index", lambda: "ok")
    return app
"""


def tenants_file(folder: Path, count: int) -> Path:
    """``count`` path tenants of the trivial app of PERFORMANCE.md (``return "ok"``), written
    beside the file so that an older tree of the dispatcher can load them too."""
    (folder / "trivial_app.py").write_text(TRIVIAL_APP)
    lines = ["version: 1", "server_names: [localhost]", "defaults: {app: trivial_app}", "tenants:"]
    lines += [f"  t{i}: {{path: /t{i}}}" for i in range(count)]
    path = folder / "tenants.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def answered(tenant: str, status: str, seconds: float) -> Any:
    """A request's record, as the dispatcher leaves it for the flush."""
    from dispatcher.metrics import Answered

    record = Answered()
    record.tenant, record.status, record.started, record.ended = tenant, status, 0.0, seconds
    return record


def child(name: str, k: int, folder: Path) -> None:
    """One measured process: set-up, warm-up, then ``k`` repetitions."""
    if name in ("observe", "loop", "record"):
        from dispatcher.metrics import Metrics

        metrics = Metrics(None)
        if name == "record":  # what the dispatcher calls: the bound deque.append
            record = metrics.record
            request = answered("t1", "200 OK", 0.001)
            for _ in range(1000 + k):
                record(request)
            return
        call = metrics.observe if name == "observe" else (lambda t, s, d: None)
        for _ in range(1000 + k):
            call("t1", "200 OK", 0.001)
    elif name == "request":
        from dispatcher import Dispatcher, load_tenants

        dispatcher = Dispatcher(load_tenants(tenants_file(folder, 100)), watch=False)
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/t7/",
            "SCRIPT_NAME": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "HTTP_HOST": "localhost",
            "wsgi.url_scheme": "http",
            "REMOTE_ADDR": "127.0.0.1",
        }

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            pass

        # What the flush thread drains each second; its own cost is the ``flush`` figure.
        pending = getattr(getattr(dispatcher, "metrics", None), "_pending", None)
        for i in range(1000 + k):
            body = dispatcher(dict(environ), start_response)
            b"".join(body)
            close = getattr(body, "close", None)
            if close is not None:
                close()
            if pending is not None and i % 1000 == 0:
                pending.clear()
    elif name == "flush":
        from dispatcher.metrics import Metrics

        metrics = Metrics(str(folder))
        states = {f"t{i}": "ready" for i in range(100)}
        for _ in range(1000):
            metrics.observe("t1", "200 OK", 0.001)
        metrics.flush(states)
        # As in a worker serving 1,000 requests/s: one flush per 1,000 requests. The requests
        # are made up once (10 tenants, 50 durations) and recorded as the dispatcher does.
        made_up = [answered(f"t{i % 10}", "200 OK", 0.001 * (i % 50)) for i in range(1000)]
        record = metrics.record
        for i, request in zip(range(k), itertools.cycle(made_up)):
            record(request)
            if i % 1000 == 999:
                metrics.flush(states)
    elif name.startswith("flush_idle"):
        from dispatcher.metrics import Metrics

        metrics = Metrics(str(folder))
        states = {f"t{i}": "ready" for i in range(int(name.rpartition("_")[2]))}
        metrics.flush(states)  # the first flush of a view compares it whole
        for _ in range(10 + k):
            metrics.flush(states, set())
    elif name.startswith("merge"):
        from dispatcher.metrics_render import render_folder

        for _ in range(1 + k):
            render_folder(str(folder))
    elif name.startswith("scrape"):
        from dispatcher.metrics import Metrics

        tenants = int(name.rpartition("_")[2])
        metrics = Metrics(str(folder))
        states = {f"t{i}": "ready" for i in range(tenants)}
        for _ in range(3):
            metrics.render(states)
        for _ in range(k):
            metrics.render(states)
    else:
        raise SystemExit(f"unknown workload {name}")


FILL = """
import sys
from dispatcher.metrics import Metrics
metrics = Metrics(sys.argv[1])
tenants = int(sys.argv[2])
states = {f"t{i}": "ready" for i in range(tenants)}
statuses = ("200 OK", "404 NOT FOUND", "500 X")
for i in range(20 * tenants):
    metrics.observe(f"t{i % tenants}", statuses[i % 3], 0.001 * (i % 900))
metrics.flush(states)
"""


def instructions(name: str, k: int, python: str, pythonpath: str, env_folder: Path) -> int:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    if name.startswith(("flush", "scrape", "merge")):
        env["PROMETHEUS_MULTIPROC_DIR"] = str(env_folder)
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        python,
        str(ROOT / "bench" / "bench_metrics.py"),
        "--child",
        name,
        str(k),
        str(env_folder),
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    match = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return int(match[1])


def per_unit(name: str, k1: int, k2: int, pythonpath: str, scrape_tenants: int = 0) -> float:
    counts = []
    for k in (k1, k2):
        with tempfile.TemporaryDirectory() as folder:
            if scrape_tenants:
                for _ in range(2):  # two workers' files
                    subprocess.run(
                        [sys.executable, "-c", textwrap.dedent(FILL), folder, str(scrape_tenants)],
                        env={
                            **os.environ,
                            "PYTHONPATH": pythonpath,
                            "PROMETHEUS_MULTIPROC_DIR": folder,
                        },
                        check=True,
                    )
            counts.append(instructions(name, k, sys.executable, pythonpath, Path(folder)))
    return (counts[1] - counts[0]) / (k2 - k1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", help="An older tree to measure a request on, for comparison.")
    parser.add_argument("--only", help="Measure only the figures whose name contains this.")
    parser.add_argument("--child", nargs=3, metavar=("NAME", "K", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, k, folder = args.child
        sys.path.append(str(ROOT))  # after $PYTHONPATH: --base puts the older tree first
        child(name, int(k), Path(folder))
        return
    here = str(ROOT)
    base = os.path.abspath(args.base) if args.base else None
    measures = {
        "observe (request thread)": lambda: (
            per_unit("observe", 20000, 120000, here) - per_unit("loop", 20000, 120000, here)
        ),
        # With the bare loop around it (a few dozen instructions): an upper bound.
        "record (request thread), with its loop": lambda: per_unit("record", 20000, 120000, here),
        "request through the dispatcher": lambda: per_unit("request", 2000, 7000, here),
        "request, base tree": lambda: per_unit("request", 2000, 7000, f"{base}:{here}"),
        "record + flush, per request": lambda: per_unit("flush", 20000, 120000, here),
        "flush, nothing pending, 100 tenants": lambda: per_unit("flush_idle_100", 50, 250, here),
        "flush, nothing pending, 1000 tenants": lambda: per_unit("flush_idle_1000", 50, 250, here),
        "scrape, in the worker, 2 workers x 20 tenants": lambda: per_unit(
            "scrape_20", 5, 25, here, 20
        ),
        "scrape, in the worker, 2 workers x 200 tenants": lambda: per_unit(
            "scrape_200", 5, 25, here, 200
        ),
        "scrape, its child, 2 workers x 20 tenants": lambda: per_unit("merge_20", 5, 25, here, 20),
        "scrape, its child, 2 workers x 200 tenants": lambda: per_unit(
            "merge_200", 2, 7, here, 200
        ),
    }
    figures = {
        what: measure()
        for what, measure in measures.items()
        if (base or "base" not in what) and (not args.only or args.only in what)
    }
    for what, figure in figures.items():
        print(f"{what:40} {figure:>14,.0f} instructions")


if __name__ == "__main__":
    main()
