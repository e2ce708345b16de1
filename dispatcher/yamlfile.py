"""Read a YAML file into plain Python data, within bounds, keeping the line of every value.

libyaml's C parser reads the file into events; :mod:`dispatcher.yamlwalk` builds the values
from them in Python, instead of ``yaml.safe_load`` or PyYAML's composer, because those
silently keep the last of two duplicate keys, lose line numbers, would let ``${VAR}`` content
be parsed as YAML, and recurse (in C) once per nesting level, so a hostile file could crash the
process. Here:

- no file can exhaust memory, recurse without end or crash the reader: the size is checked
  before parsing, nesting depth and the number of values (aliases expanded) while walking,
  each a located problem like any other (:mod:`dispatcher.yamllimits`);
- a duplicate key anywhere is a problem naming both lines;
- ``${VAR}`` and ``${VAR:-default}`` are expanded inside parsed string values only, so a
  variable's content can never add keys or tenants;
- the plain scalars YAML 1.1 turns into booleans, numbers or null (``no``, ``on``, ``0700``,
  ``~``) are remembered, so the schema check can say "quote it" where a string is expected;
- explicit tags other than the plain standard ones (``!!python/...``, ``!!binary``, ``!foo``)
  are problems, never silently dropped or obeyed.

::

    doc = parse_yaml(text, "tenants.yaml", os.environ)
    doc.data["tenants"]["acme"]["path"]      # "/acme"
    doc.line(("tenants", "acme", "path"))    # 7
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import yamllimits as limits
from .problems import Path, Problem
from .yamllimits import Limit
from .yamlwalk import Walker

try:  # libyaml's C parser is several times faster; PyYAML wheels ship it.
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - only on a PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


@dataclass
class YamlDocument:
    """Parsed data, the line of each path in it, and what went wrong on the way."""

    file: str
    text: str = ""
    data: Any = None
    lines: dict[Path, int] = field(default_factory=dict)
    #: Paths whose unquoted text YAML 1.1 read as a non-string, with that text.
    plain_scalars: dict[Path, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def problem(
        self,
        path: Path,
        message: str,
        fix: str = "",
        *,
        line: int | None = None,
        warning: bool = False,
    ) -> None:
        """Record a problem at ``path`` (on ``line``, else on ``path``'s own line)."""
        at = line if line is not None else self.line(path)
        self.problems.append(Problem(self.file, at, path, message, fix, warning))


def read_text(file: str) -> tuple[str | None, Problem | None]:
    """The file's text, or the problem reading it (missing, too large, not UTF-8).

    At most :data:`~dispatcher.yamllimits.MAX_BYTES` (and one more) are read, whatever the
    file is.
    """
    try:
        with open(file, "rb") as f:
            data = f.read(limits.MAX_BYTES + 1)
    except OSError as e:
        return None, Problem(
            file,
            0,
            (),
            f"cannot read the tenants file: {e.strerror or e}",
            "Pass the right file with -f or $TENANTS_FILE",
        )
    if len(data) > limits.MAX_BYTES:
        return None, _too_large(file, data.count(b"\n") + 1)
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return None, Problem(
            file,
            line,
            (),
            f"the file is not UTF-8 text (byte 0x{data[e.start]:02x} on this line)",
            "Save it as UTF-8",
        )


def _too_large(file: str, line: int) -> Problem:
    limit = limits.too_large(line)
    return Problem(file, limit.line, (), limit.message, limit.fix)


def parse_yaml(text: str, file: str, environ: Mapping[str, str]) -> YamlDocument:
    """Parse ``text`` (the contents of ``file``); problems are collected, never raised."""
    doc = YamlDocument(file, text)
    if len(text) > limits.MAX_BYTES // 4:  # else it cannot be too large, even in 4-byte chars
        encoded = text.encode("utf-8", "surrogatepass")
        if len(encoded) > limits.MAX_BYTES:
            line = encoded.count(b"\n", 0, limits.MAX_BYTES) + 1
            doc.problems.append(_too_large(file, line))
            return doc
    try:
        data = _walk(doc, environ)
    except Limit as e:  # the rest of the file cannot be trusted: this is the one problem
        doc.problems[:] = [Problem(file, e.line, (), e.message, e.fix)]
        return doc
    except yaml.MarkedYAMLError as e:
        doc.problems[:] = [_syntax_problem(e, text, file)]
        return doc
    except yaml.reader.ReaderError as e:  # a control character (NUL, ESC...) in the text
        line = text.encode("utf-8", "replace").count(b"\n", 0, e.position) + 1
        code = e.character if isinstance(e.character, int) else ord(e.character)
        what = "a NUL byte" if code == 0 else f"the character U+{code:04X}"
        escape = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
        doc.problems[:] = [
            Problem(
                file,
                line,
                (),
                f"invalid YAML: {what} is not allowed in a YAML file",
                f'Remove it, or write it as "{escape}" inside double quotes',
            )
        ]
        return doc
    except (yaml.YAMLError, UnicodeError) as e:  # e.g. lone surrogates in a str
        doc.problems[:] = [Problem(file, 1, (), f"invalid YAML: {e}", "Fix the syntax")]
        return doc
    if data is _EMPTY:
        doc.problems.append(
            Problem(file, 1, (), "the file is empty", "Start it with 'version: 1' and 'tenants:'")
        )
        return doc
    doc.data = data
    return doc


_EMPTY: Any = object()


def _walk(doc: YamlDocument, environ: Mapping[str, str]) -> Any:
    """The one document of the file, walked event by event."""
    get_event = _Loader(doc.text).get_event
    get_event()  # the stream's start
    if type(get_event()) is yaml.StreamEndEvent:  # nothing, or comments only
        return _EMPTY
    data = Walker(doc, environ, get_event).document()
    get_event()  # the document's end
    event: Any = get_event()
    if type(event) is not yaml.StreamEndEvent:  # not a limit, but also the file's one problem
        line = event.start_mark.line + 1
        raise Limit(
            line,
            "the file holds a second YAML document (after '---')",
            "Keep one document: remove the '---' line and merge what follows into the first",
        )
    return data


def _syntax_problem(e: yaml.MarkedYAMLError, text: str, file: str) -> Problem:
    mark = e.problem_mark or e.context_mark
    # At end of file libyaml points past the last line; name the last line instead.
    line = min(mark.line + 1, len(text.splitlines()) or 1) if mark is not None else 1
    what = " ".join(str(part) for part in (e.context, e.problem) if part)
    fix = "Fix the syntax at that line"
    bad_line = text.splitlines()[line - 1] if text else ""
    if "\t" in bad_line[: len(bad_line) - len(bad_line.lstrip())]:
        fix = "Indent with spaces: YAML does not allow tabs for indentation"
    return Problem(file, line, (), f"invalid YAML: {what}", fix)
