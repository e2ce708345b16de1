"""Read a YAML file into plain Python data, keeping the line of every value.

PyYAML's libyaml parser composes the document into nodes that carry their position; this
module walks those nodes itself instead of using ``yaml.safe_load`` because ``safe_load``
silently keeps the last of two duplicate keys, loses line numbers, and would let ``${VAR}``
content be parsed as YAML. Here:

- a duplicate key anywhere is a problem naming both lines;
- ``${VAR}`` and ``${VAR:-default}`` are expanded inside parsed string values only, so a
  variable's content can never add keys or tenants;
- the plain scalars YAML 1.1 turns into booleans, numbers or null (``no``, ``on``, ``0700``,
  ``~``) are remembered, so the schema check can say "quote it" where a string is expected.

::

    doc = parse_yaml(text, "tenants.yaml", os.environ)
    doc.data["tenants"]["acme"]["path"]      # "/acme"
    doc.line(("tenants", "acme", "path"))    # 7
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from .problems import Path, Problem

try:  # libyaml's C parser is several times faster; PyYAML wheels ship it.
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - only on a PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_STANDARD_TAGS = "tag:yaml.org,2002:"
# ${VAR} or ${VAR:-default}; the default may hold {placeholders} (one level of braces).
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\{[^{}]*\})*))?\}")


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


def parse_yaml(text: str, file: str, environ: Mapping[str, str]) -> YamlDocument:
    """Parse ``text`` (the contents of ``file``); problems are collected, never raised."""
    doc = YamlDocument(file, text)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        # At end of file libyaml points past the last line; name the last line instead.
        line = min(mark.line + 1, len(text.splitlines()) or 1) if mark is not None else 1
        what = " ".join(str(part) for part in (e.context, e.problem) if part)
        doc.problems.append(
            Problem(file, line, (), f"invalid YAML: {what}", "Fix the syntax at that line")
        )
        return doc
    except yaml.YAMLError as e:
        doc.problems.append(Problem(file, 1, (), f"invalid YAML: {e}", "Fix the syntax"))
        return doc
    if node is None:
        doc.problems.append(
            Problem(file, 1, (), "the file is empty", "Start it with 'version: 1' and 'tenants:'")
        )
        return doc
    doc.lines[()] = node.start_mark.line + 1
    doc.data = _Walker(doc, environ).value(node, ())
    return doc


class _Walker:
    """Turns composed nodes into Python values, filling in the document's lines and problems."""

    def __init__(self, doc: YamlDocument, environ: Mapping[str, str]) -> None:
        self.doc = doc
        self.environ = environ
        self.constructor = yaml.constructor.SafeConstructor()

    def value(self, node: yaml.Node, path: Path) -> Any:
        if not node.tag.startswith(_STANDARD_TAGS):
            self.doc.problem(path, f"unknown YAML tag '{node.tag}'", "Remove the tag")
            node.tag = _STR_TAG if isinstance(node, yaml.ScalarNode) else node.tag
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.doc.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.value(item, (*path, index)))
            return items
        return self.scalar(node, path)

    def scalar(self, node: Any, path: Path) -> Any:
        if node.tag == _STR_TAG:
            return self.expand(node.value, path) if "${" in node.value else node.value
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:  # e.g. a plain "=" (YAML's "value" tag)
            return node.value
        if not node.style and not isinstance(value, str):  # plain: None, or '' from libyaml
            self.doc.plain_scalars[path] = node.value
        return value

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:  # `<<: *anchor`; the mapping's own keys win
                is_list = isinstance(value_node, yaml.SequenceNode)
                sources = value_node.value if is_list else [value_node]
                for source in sources:
                    extra = self.value(source, path)
                    if isinstance(extra, dict):
                        merged = {**extra, **merged}
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.doc.problems.append(
                    Problem(
                        self.doc.file, line, path, "a key must be text", "Write the key as a word"
                    )
                )
                continue
            key = self.constructor.construct_object(key_node)
            if not key_node.style and not isinstance(key, str):
                self.doc.plain_scalars[(*path, key)] = key_node.value
            if key in first_line:
                shown = key_node.value
                what = "tenant" if path == ("tenants",) else "key"
                self.doc.problems.append(
                    Problem(
                        self.doc.file,
                        line,
                        (*path, shown),
                        f"duplicate {what} '{shown}' (first at line {first_line[key]})",
                        "Keep only one of them",
                    )
                )
                continue
            first_line[key] = line
            self.doc.lines[(*path, key)] = line
            result[key] = self.value(value_node, (*path, key))
        return {**merged, **result} if merged else result

    def expand(self, text: str, path: Path) -> str:
        """Fill in ``${VAR}`` and ``${VAR:-default}``; a missing variable is a problem."""

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.environ:
                return self.environ[name]
            if default is not None:
                return default
            self.doc.problem(
                path,
                f"environment variable {name} is not set",
                f"Set it, or give a default: ${{{name}:-...}}",
            )
            return ""

        return _ENV_VAR.sub(replace, text)
