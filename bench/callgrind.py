"""Count instructions under valgrind's callgrind from inside Python, with no compiler.

A program run under ``valgrind --tool=callgrind --instr-atstart=no`` boots at close to native
speed; it then switches instrumentation on itself, cuts its run into segments, and callgrind
writes one dump per segment. The switches are valgrind's *client requests*: a fixed x86-64
instruction sequence that callgrind recognises and that does nothing on a real CPU. Python
cannot emit it, so this module copies those 29 bytes of machine code into an executable page and
calls them through ctypes (what ``CALLGRIND_DUMP_STATS`` in ``<valgrind/callgrind.h>`` compiles
to)::

    requests = ClientRequests()          # in the program under valgrind
    requests.start_instrumentation()
    requests.zero(); work(); requests.dump()          # one dump: the Ir of work()
    # the parent: run(command, out) starts it, and dumps(out) reads the Ir of each segment
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

#: ``mov rax, rdi`` (the request block); ``xor edx, edx`` (the result when not under
#: valgrind); the special-instruction preamble, four ``rol rdi`` that add up to 128 bits and so
#: leave it unchanged; ``xchg rbx, rbx`` (the request itself); ``mov rax, rdx``; ``ret``.
_PREAMBLE = "48c1c70348c1c70d48c1c73d48c1c733"
_CODE = bytes.fromhex("4889f831d2" + _PREAMBLE + "4887db4889d0c3")
#: The same for one fixed request block: ``mov rax, <address>`` first, no argument to convert,
#: so that a dump costs the fewest instructions (bench/annotate.py dumps at every step).
_FIXED = "48b8{address}31d2" + _PREAMBLE + "4887dbc3"
_RUNNING_ON_VALGRIND = 0x1001
_CALLGRIND = (ord("C") << 24) | (ord("T") << 16)  # VG_USERREQ_TOOL_BASE('C', 'T')
_DUMP_STATS, _ZERO_STATS, _TOGGLE_COLLECT = _CALLGRIND, _CALLGRIND + 1, _CALLGRIND + 2
_START_INSTRUMENTATION, _STOP_INSTRUMENTATION = _CALLGRIND + 4, _CALLGRIND + 5

VALGRIND = shutil.which("valgrind")


class ClientRequests:
    """Callgrind's client requests for this process. Outside valgrind, every call is a no-op."""

    def __init__(self) -> None:
        if platform.machine() not in ("x86_64", "AMD64"):
            raise SystemExit(
                f"bench/callgrind.py: client requests are x86-64 code, not {platform.machine()}"
            )
        self._page = mmap.mmap(
            -1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
        )
        self._page.write(_CODE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self._call = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p)(address)
        # One request block, reused: a request costs the same instructions every time.
        self._block = (ctypes.c_ulong * 6)()
        self._block_address = ctypes.addressof(self._block)
        self.on_valgrind = bool(self._request(_RUNNING_ON_VALGRIND))
        self._dump_block = (ctypes.c_ulong * 6)(_DUMP_STATS)
        fixed = _FIXED.format(
            address=ctypes.addressof(self._dump_block).to_bytes(8, "little").hex()
        )
        self._page.seek(64)
        self._page.write(bytes.fromhex(fixed))
        #: :meth:`dump` as a function of no arguments, cheaper to call.
        self.fast_dump = ctypes.CFUNCTYPE(None)(address + 64)

    def _request(self, code: int) -> int:
        self._block[0] = code
        return int(self._call(self._block_address))

    def start_instrumentation(self) -> None:
        self._request(_START_INSTRUMENTATION)

    def stop_instrumentation(self) -> None:
        self._request(_STOP_INSTRUMENTATION)

    def zero(self) -> None:
        self._request(_ZERO_STATS)

    def dump(self) -> None:
        """Write the counts since the last dump (or zero) as a new part, and zero them."""
        self._request(_DUMP_STATS)

    def toggle_collect(self) -> None:
        self._request(_TOGGLE_COLLECT)


def command(out: Path, *, lines: bool = False) -> list[str]:
    """The valgrind command line a program using :class:`ClientRequests` runs under: it starts
    uninstrumented, and its dumps are ``out.<pid>.<n>``."""
    if VALGRIND is None:
        raise SystemExit("valgrind is not installed: `apt-get install -y valgrind`")
    return [
        VALGRIND,
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}.%p",
        f"--dump-line={'yes' if lines else 'no'}",
        "--dump-instr=no",
        "--compress-strings=no",
        "--compress-pos=no",
    ]


def run(program: list[str], out: Path, *, cwd: Path, lines: bool = False) -> str:
    """Run ``program`` under callgrind; its stdout. Fails with valgrind's output if it fails.

    String hashing is seeded the same in every run, so that two runs lay out their dicts and
    sets alike and count the same probes."""
    result = subprocess.run(
        [*command(out, lines=lines), *program],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(program)} failed under callgrind:\n{result.stderr[-4000:]}")
    return result.stdout


def dumps(out: Path) -> list[Path]:
    """The dump files of a run, in the order they were written (the last, at exit, left out)."""
    found = [p for p in out.parent.glob(f"{out.name}.*.*") if re.fullmatch(r"\d+", p.suffix[1:])]
    return sorted(found, key=lambda p: int(p.suffix[1:]))


def instructions(dump: Path) -> int:
    """The instructions (``Ir``) counted in one dump."""
    with open(dump) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise SystemExit(f"{dump}: no 'summary:' line; is it a callgrind dump?")
