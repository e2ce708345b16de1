"""The figures of the latest run of each benchmark, and the ones measured before issue 15.

Each benchmark saves its raw figures as ``bench/results/<name>.json`` (with the commit, the
date and the machine), so the report can be rebuilt from runs made at different times: a
subset can be run again without losing the rest. ``bench/results/before/`` holds the same
files as measured on main before the work of issue 15 (dispatcher/ at 41588b2); no run
overwrites them::

    save("instructions", {"ir": {...}})
    after, before = load("instructions"), load("instructions", before=True)
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.report import ROOT, machine

RESULTS = ROOT / "bench" / "results"


def commit() -> str:
    """The commit of the code measured: the last that changed dispatcher/ or tenants/ (the
    benchmarks' own changes do not make other figures), ``+`` if they have local changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    head = git("log", "-1", "--format=%h", "--", "dispatcher", "tenants") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "dispatcher", "tenants")
    return head + ("+" if dirty else "")


def save(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        **figures,
    }
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def load(name: str, *, before: bool = False) -> dict[str, Any] | None:
    path = RESULTS / ("before" if before else "") / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
