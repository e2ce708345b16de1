"""What every benchmark here shares: medians with their spread, the machine, the report file.

Each benchmark prints its table and puts it into docs/benchmarks.md under its own heading,
replacing only that section, so benchmarks can be run one at a time::

    write_section("## Migrations (bench/bench_migrate.py)", table_text)
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def spread(values: list[float], digits: int = 1) -> str:
    """``median (min-max)``."""
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def machine() -> str:
    """The machine the figures were measured on: they only compare within one run."""
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )


def write_section(heading: str, section: str) -> None:
    """Put ``section`` (which starts with ``heading``) into docs/benchmarks.md, replacing
    only the previous section under that heading."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    if heading in lines:
        start = lines.index(heading)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        lines[start:end] = section.rstrip("\n").splitlines() + ([""] if end < len(lines) else [])
    else:
        lines += ["", *section.rstrip("\n").splitlines()]
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(lines) + "\n")
