"""The bounds within which a tenants file is read, and the error each one gives.

No file, a careless one or a hostile one, may exhaust memory, recurse without end or crash the
process that reads it (``check``, a worker at boot, every worker on a live edit). The reader
(:mod:`dispatcher.yamlfile`, :mod:`dispatcher.yamlwalk`) checks each bound before it can be
exceeded and raises :class:`Limit`, which becomes one located problem like any other. The
values are generous for real files and documented in docs/tenants-yaml.md::

    if depth >= limits.MAX_DEPTH:
        raise limits.too_deep(line)
"""

from __future__ import annotations

#: The largest file read, checked before parsing: 100,000 tenants take 7 to 20 MiB.
MAX_BYTES = 32 * 1024 * 1024
#: Collections inside collections: real files use 4 to 6 (top, tenants, a tenant, config,
#: and a value nested a few levels inside config).
MAX_DEPTH = 64
#: Keys, values and list items in the whole file, aliases expanded: 100,000 tenants of 20
#: each. With MAX_ANCHORED, reading any file peaks at about 660 MiB.
MAX_VALUES = 2_000_000
#: Values inside anchored values (``&name``), kept as parser events (~360 bytes each) for
#: their aliases to replay: a defaults block or a tenant's settings hold a few dozen.
MAX_ANCHORED = 500_000
#: What aliases may add in all: this many values, plus ALIAS_RATIO per value written before
#: them. A ten-line "billion laughs" is stopped after a fraction of a second.
ALIAS_FLOOR = 100_000
ALIAS_RATIO = 20


class Limit(Exception):
    """A bound was exceeded at ``line``: reading stops (the rest cannot be trusted), and this
    is the file's one problem."""

    def __init__(self, line: int, message: str, fix: str) -> None:
        super().__init__(message)
        self.line, self.message, self.fix = line, message, fix


def too_large(line: int) -> Limit:
    return Limit(
        line,
        f"the file is larger than {MAX_BYTES // 2**20} MiB (it goes past that on this line)",
        "Check that this is the tenants file: 100,000 tenants take about 10 MiB",
    )


def too_deep(line: int) -> Limit:
    return Limit(
        line,
        f"values are nested more than {MAX_DEPTH} levels deep",
        "Flatten it: a tenants file needs a few levels (tenants, a tenant, its config, a "
        "value in it)",
    )


def too_many_values(line: int) -> Limit:
    return Limit(
        line,
        f"the file holds more than {MAX_VALUES:,} values (keys, values and list items, "
        "aliases expanded)",
        "Split it: a file of 100,000 tenants holds about 1,000,000",
    )


def too_much_anchored(line: int) -> Limit:
    return Limit(
        line,
        f"anchored values (&name) hold more than {MAX_ANCHORED:,} values in all",
        "Anchor only what aliases repeat (a defaults block, a tenant's settings)",
    )


def too_much_expanded(line: int) -> Limit:
    return Limit(
        line,
        f"aliases expand to more than {ALIAS_FLOOR:,} values plus {ALIAS_RATIO} per value "
        "written before them (an alias expansion bomb?)",
        "Write the values out, or use fewer aliases of aliases: each use of an alias copies "
        "everything its anchor holds",
    )
