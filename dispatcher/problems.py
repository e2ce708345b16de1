"""Problems found in a tenants file, and the one error that carries all of them.

Loading never stops at the first mistake: every step adds :class:`Problem` objects to a list,
and :class:`ConfigError` reports them together, each naming the file, the line, the tenant and
the field, and saying how to fix it::

    try:
        tenant_set = load_tenants("tenants.yaml")
    except ConfigError as e:
        print(e)            # one line per problem, sorted by line
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .errors import DispatcherError
from .logs import escape_controls

#: The longest part of a message (place, what, fix) shown whole.
_LONGEST = 600

#: A position in the parsed document: ``("tenants", "acme", "path")``.
Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One mistake (or, with ``warning=True``, one risk) at one place in one file."""

    file: str
    line: int
    path: Path
    message: str
    fix: str = ""
    warning: bool = False

    @property
    def tenant(self) -> str | None:
        """The tenant the problem belongs to, if any."""
        if len(self.path) >= 2 and self.path[0] == "tenants":
            return str(self.path[1])
        return None

    @property
    def field(self) -> str:
        """The dotted field name within the tenant (or the file), ``""`` for the whole thing."""
        rest = self.path[2:] if self.tenant is not None else self.path
        return ".".join(str(part) for part in rest)

    def __str__(self) -> str:
        where = []
        if self.tenant is not None:
            where.append(f"tenant '{self.tenant}'")
        if self.field:
            where.append(f"field '{self.field}'")
        # Line 0: about the file as a whole (it is missing, say).
        line = f":{self.line}" if self.line else ""
        place = f"{self.file}{line}: " + (", ".join(where) + ": " if where else "")
        kind = "warning: " if self.warning else ""
        text = f"{_shown(place)}{kind}{_shown(self.message)}"
        return text + (f". {_shown(self.fix)}" if self.fix else "")


def _shown(text: str) -> str:
    """``text`` on one line, and short: a message may quote a value from the file, and a
    hostile file's value can be a megabyte long or hold terminal escape sequences."""
    if len(text) > _LONGEST:
        head, tail = text[:500], text[-80:]
        text = f"{head}...({len(text) - 580:,} characters left out)...{tail}"
    return escape_controls(text)


class ConfigError(DispatcherError):
    """A tenants file that cannot be used. ``str()`` lists every problem, one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line))
        super().__init__("\n".join(str(p) for p in self.problems))
