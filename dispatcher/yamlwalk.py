"""Turn libyaml's parser events into plain Python values, within bounds, keeping every line.

PyYAML's own composer (in C with ``CSafeLoader``) recurses once per nesting level, so a deeply
nested file crashes the process, and it hands over alias-expanded graphs with no limit on
their size. Here libyaml only *parses* (its event parser is a state machine, not recursive), and
this module builds the values itself, one event at a time, with every bound checked before it
can be exceeded:

- nesting is at most :data:`MAX_DEPTH` levels (so the walker's own recursion stays shallow);
- at most :data:`MAX_VALUES` values (keys, values and list items) are produced in all;
- aliases (``*name``), which YAML expands at every use, may add at most
  :data:`ALIAS_FLOOR` values plus :data:`ALIAS_RATIO` per value written before them, which
  stops an expansion bomb ("billion laughs") after a fraction of a second;
- an alias inside the value it names, or one used before its anchor, is a problem, not a loop.

A bound exceeded raises :class:`Limit` (reading stops there: the rest cannot be trusted); any
other mistake (a duplicate key, an explicit tag) is added to the document and reading goes on::

    walker = Walker(doc, os.environ, CSafeLoader(text).get_event)
    doc.data = walker.document()
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import yaml
from yaml.resolver import Resolver

from .problems import Path

if TYPE_CHECKING:
    from .yamlfile import YamlDocument

#: Collections inside collections: real tenants files use 4 to 6 (top, tenants, name,
#: config, and a value nested a few levels inside config).
MAX_DEPTH = 64
#: Keys, values and list items in the whole file, aliases expanded: 100,000 tenants of 20 each.
MAX_VALUES = 2_000_000
#: What aliases may add in all: this many values, plus ALIAS_RATIO per value written before.
ALIAS_FLOOR = 100_000
ALIAS_RATIO = 20

_YAML = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ, _MERGE = _YAML + "str", _YAML + "map", _YAML + "seq", _YAML + "merge"
#: The tags a value may carry explicitly (``!!str 5``); any other is reported.
_SCALAR_TAGS = frozenset(_YAML + t for t in ("str", "int", "float", "bool", "null"))
#: Plain-scalar resolution (YAML 1.1, as PyYAML's SafeLoader), by first character.
_RESOLVERS: dict[str, list[tuple[str, re.Pattern[str]]]] = {
    key: list(rules) for key, rules in Resolver.yaml_implicit_resolvers.items() if key is not None
}
# ${VAR} or ${VAR:-default}; the default may hold {placeholders} (one level of braces).
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\{[^{}]*\})*))?\}")
#: What a value YAML resolved is, in a message.
_KINDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "timestamp": "a date",
}
_Scalar, _Alias = yaml.ScalarEvent, yaml.AliasEvent
_MapStart, _SeqStart = yaml.MappingStartEvent, yaml.SequenceStartEvent
_MapEnd, _SeqEnd = yaml.MappingEndEvent, yaml.SequenceEndEvent
_UNSET: Any = object()


def _line(event: Any) -> int:
    return int(event.start_mark.line) + 1


def _resolve(text: str) -> str | None:
    """The tag YAML 1.1 gives a plain scalar, ``None`` for text (the common case, fast)."""
    for tag, pattern in _RESOLVERS.get(text[:1], ()):
        if pattern.match(text):
            return tag
    return None


class Limit(Exception):
    """A bound was exceeded at ``line``: reading stops, with this message and fix."""

    def __init__(self, line: int, message: str, fix: str) -> None:
        super().__init__(message)
        self.line, self.message, self.fix = line, message, fix


def shown_tag(tag: str) -> str:
    """``tag:yaml.org,2002:binary`` as it was written: ``!!binary``."""
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


class Walker:
    """Builds one document's values from its events, filling in its lines and problems."""

    def __init__(
        self, doc: YamlDocument, environ: Mapping[str, str], get_event: Callable[[], Any]
    ) -> None:
        self.doc = doc
        self.environ = environ
        self.constructor = yaml.constructor.SafeConstructor()
        self.parser_next = get_event
        #: Where the next event comes from: the parser, the recorder, or an alias's replay.
        self.next: Callable[[], Any] = get_event
        #: The events of anchored values, in order; an alias replays its slice.
        self.recorded: list[Any] = []
        #: Anchor name -> its slice of ``recorded``; ``None`` while the value is still open.
        self.anchors: dict[str, tuple[int, int] | None] = {}
        self.recording = 0  # anchored collections open
        self.replaying = 0  # aliases being expanded, one inside another
        self.written = 0  # values read from the file itself
        self.expanded = 0  # values produced by expanding aliases
        self.alias_line = 0  # the outermost alias being expanded
        self.key_text = ""  # the text of the last key read

    def document(self) -> Any:
        """The single document's value (the stream's and document's start already read)."""
        event = self.next()
        self.doc.lines[()] = _line(event)
        return self.value(event, (), 0)

    def record(self) -> Any:
        event = self.parser_next()
        self.recorded.append(event)
        return event

    def count(self, event: Any, expanded: bool = False) -> None:
        """One more value (``event``): from the file itself, or from expanding an alias."""
        if expanded or self.replaying:
            self.expanded += 1
            if self.expanded > ALIAS_FLOOR + ALIAS_RATIO * self.written:
                raise Limit(
                    self.alias_line,
                    f"aliases expand to more than {ALIAS_FLOOR:,} values plus {ALIAS_RATIO} "
                    "per value written before them (an alias expansion bomb?)",
                    "Write the values out, or use fewer aliases of aliases: each use of an "
                    "alias copies everything its anchor holds",
                )
        else:
            self.written += 1
        if self.written + self.expanded > MAX_VALUES:
            self.too_many(event)

    def too_many(self, event: Any) -> None:
        raise Limit(
            self.alias_line if self.replaying else _line(event),
            f"the file holds more than {MAX_VALUES:,} values (keys, values and list "
            "items, aliases expanded)",
            "Split it: a file of 100,000 tenants holds about 1,000,000",
        )

    def check_depth(self, event: Any, depth: int) -> None:
        if depth >= MAX_DEPTH:
            raise Limit(
                _line(event),
                f"values are nested more than {MAX_DEPTH} levels deep",
                "Flatten it: a tenants file needs a few levels (tenants, a tenant, its "
                "config, a value in it)",
            )

    def value(self, event: Any, path: Path, depth: int) -> Any:
        """The value starting with ``event`` (already read), at ``path``, ``depth`` levels in."""
        kind = type(event)
        if kind is _Alias:
            return self.alias(event, path, depth)
        if self.replaying:
            self.count(event)
        else:  # count() inlined: this is the hot path of a large file
            self.written += 1
            if self.written + self.expanded > MAX_VALUES:
                self.too_many(event)
        if kind is _Scalar:
            if event.anchor is not None and not self.replaying:
                self.anchor_scalar(event)
            return self.scalar(event, path)
        self.check_depth(event, depth)
        anchor = event.anchor if not self.replaying else None
        start = self.open_anchor(anchor, event) if anchor is not None else 0
        tag = event.tag
        if kind is _MapStart:
            if tag is not None and tag not in ("!", _MAP):
                self.bad_tag(tag, path)
            result: Any = self.mapping(path, depth + 1)
        else:
            if tag is not None and tag not in ("!", _SEQ):
                self.bad_tag(tag, path)
            result = self.sequence(path, depth + 1)
        if anchor is not None:
            self.close_anchor(anchor, start)
        return result

    def open_anchor(self, anchor: str, event: Any) -> int:
        """Start recording the events of an anchored collection (``event`` is its first)."""
        self.anchors[anchor] = None
        if self.recording:  # the recorder already has it
            start = len(self.recorded) - 1
        else:
            start = len(self.recorded)
            self.recorded.append(event)
            self.next = self.record
        self.recording += 1
        return start

    def close_anchor(self, anchor: str, start: int) -> None:
        self.recording -= 1
        if not self.recording:
            self.next = self.parser_next
        self.anchors[anchor] = (start, len(self.recorded))

    def anchor_scalar(self, event: Any) -> None:
        if not self.recording:
            self.recorded.append(event)
        self.anchors[event.anchor] = (len(self.recorded) - 1, len(self.recorded))

    def alias(self, event: Any, path: Path, depth: int) -> Any:
        """Expand ``*name``: replay the events of its anchored value at ``path``."""
        span = self.anchors.get(event.anchor, _UNSET)
        if span is None or span is _UNSET:
            line = _line(event)
            if span is None:
                message = f"alias '*{event.anchor}' is inside the value it names (a loop)"
                fix = "Point it at another anchor, or write the value out"
            else:
                message = f"alias '*{event.anchor}' has no anchor '&{event.anchor}' before it"
                fix = f"Define '&{event.anchor}' on a value above this line, or fix the name"
            self.doc.problem(path, message, fix, line=line)
            return None
        start, end = span
        if not self.replaying:
            self.alias_line = _line(event)
        events = iter(self.recorded[start:end])
        saved, self.next = self.next, events.__next__
        self.replaying += 1
        try:
            return self.value(next(events), path, depth)
        finally:
            self.replaying -= 1
            self.next = saved

    def sequence(self, path: Path, depth: int) -> list[Any]:
        items: list[Any] = []
        lines, next_event, value = self.doc.lines, self.next, self.value
        event = next_event()
        while type(event) is not _SeqEnd:
            at = (*path, len(items))
            lines[at] = event.start_mark.line + 1
            items.append(value(event, at, depth))
            event = next_event()
        return items

    def mapping(self, path: Path, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        merged: dict[Any, Any] = {}
        lines = self.doc.lines
        next_event = self.next
        event = next_event()
        while type(event) is not _MapEnd:
            line = _line(event)
            key = self.key(event, path, depth)
            event = next_event()
            if key is _MERGE:  # `<<: *anchor`; the mapping's own keys win
                for source in self.merge_sources(event, path, depth):
                    merged = {**source, **merged}
            elif key is _UNSET:  # not a key (reported): its value is read, then dropped
                self.discard(event, path, depth)
            elif key in first_line:
                shown = self.key_text
                what = "tenant" if path == ("tenants",) else "key"
                self.doc.problem(
                    (*path, shown),
                    f"duplicate {what} '{shown}' (first at line {first_line[key]})",
                    "Keep only one of them",
                    line=line,
                )
                self.discard(event, path, depth)
            else:
                first_line[key] = line
                lines[(*path, key)] = line
                result[key] = self.value(event, (*path, key), depth)
            event = next_event()
        if merged:
            for key, line in first_line.items():  # a merge after them noted its own lines
                lines[(*path, key)] = line
            return {**merged, **result}
        return result

    def discard(self, event: Any, path: Path, depth: int) -> None:
        """Read a value that is dropped: its anchors, limits and tags count, its lines not."""
        kept = self.doc.lines, self.doc.plain_scalars
        self.doc.lines, self.doc.plain_scalars = {}, {}
        try:
            self.value(event, path, depth)
        finally:
            self.doc.lines, self.doc.plain_scalars = kept

    def key(self, event: Any, path: Path, depth: int) -> Any:
        """A mapping key: text (or a YAML 1.1 number or boolean), ``_MERGE``, or ``_UNSET``
        for a list, mapping or broken alias (reported). Keys are never ``${VAR}``-expanded."""
        line = _line(event)
        if type(event) is _Alias:
            anchor: Any = event.anchor
            span = self.anchors.get(anchor)
            if span is not None and type(self.recorded[span[0]]) is _Scalar:
                self.count(event, expanded=True)
                event = self.recorded[span[0]]  # an alias of a scalar is that scalar
            elif span is None:  # unknown, or a loop: reported by alias()
                self.discard(event, path, depth)
                return _UNSET
        if type(event) is not _Scalar:
            self.doc.problem(
                path,
                "a key must be text, not a list or mapping",
                "Write the key as a word",
                line=line,
            )
            self.discard(event, path, depth)
            return _UNSET
        self.count(event)
        if event.anchor is not None and not self.replaying:
            self.anchor_scalar(event)
        text: str = event.value
        self.key_text = text
        tag = event.tag
        if tag is None or tag == "!":
            if tag == "!" or not event.implicit[0]:
                return text
            if text == "<<":
                return _MERGE
            tag = _resolve(text)
            if tag is None:
                return text
        elif tag not in _SCALAR_TAGS:
            self.bad_tag(tag, path, line)
            return text
        if tag == _STR:
            return text
        key = self.construct(tag, text, path, event)
        if not event.style and not isinstance(key, str):
            self.doc.plain_scalars[(*path, key)] = text
        return key

    def merge_sources(self, event: Any, path: Path, depth: int) -> list[dict[Any, Any]]:
        """The mappings a ``<<`` merges, first one winning: one, or a list of them."""
        if type(event) is _SeqStart and event.anchor is None:
            self.count(event)
            self.check_depth(event, depth)
            if event.tag not in (None, "!", _SEQ):
                self.bad_tag(event.tag, path, _line(event))
            sources, next_event = [], self.next
            item = next_event()
            while type(item) is not _SeqEnd:
                sources.append((item, self.value(item, path, depth + 1)))
                item = next_event()
        else:
            sources = [(event, self.value(event, path, depth))]
        result = []
        for source, value in sources:
            if isinstance(value, dict):
                result.append(value)
            elif value is not None or type(source) is not _Alias:  # a bad alias: reported
                self.doc.problem(
                    path,
                    "'<<' merges a mapping (or a list of them) into this one",
                    "Write '<<: *name' where '&name' is on a mapping",
                    line=_line(source),
                )
        return result

    def scalar(self, event: Any, path: Path) -> Any:
        """A scalar's value: text unless plain (or tagged) and YAML 1.1 reads it otherwise."""
        text: str = event.value
        tag = event.tag
        if tag is None or tag == "!":
            # Quoted and block scalars are text, and so is `! value` (YAML's "not resolved");
            # a plain one may be a number, boolean, null or date.
            tag = _resolve(text) if tag is None and event.implicit[0] else None
            if tag is None:
                return self.expand(text, path) if "${" in text else text
        elif tag not in _SCALAR_TAGS:
            self.bad_tag(tag, path)
            return text
        if tag == _STR:
            return self.expand(text, path) if "${" in text else text
        value = self.construct(tag, text, path, event)
        if not event.style and not isinstance(value, str):  # remembered for "quote it"
            self.doc.plain_scalars[path] = text
        return value

    def construct(self, tag: str, text: str, path: Path, event: Any) -> Any:
        """A YAML 1.1 number, boolean, null or date; its text (and a problem) if invalid."""
        name = tag[len(_YAML) :]
        if name in ("merge", "value", "yaml"):  # "<<", "=" as plain values: text
            return text
        try:
            if name == "int" and text.isdigit() and text.isascii() and text[0] != "0":
                return int(text)  # the common case, without PyYAML's general conversion
            if name == "bool":
                return self.constructor.bool_values[text.lower()]
            if name == "null":
                return None
            node = yaml.ScalarNode(tag, text)
            if name == "int":
                return self.constructor.construct_yaml_int(node)
            if name == "float":
                return self.constructor.construct_yaml_float(node)
            return self.constructor.construct_yaml_timestamp(node)
        except (ValueError, KeyError, TypeError) as e:
            # 2024-02-30, a number of 5,000 digits, `!!int x`: Python refuses to convert it.
            kind = _KINDS.get(name, f"!!{name}")
            reason = f" ({str(e).split(';')[0]})" if isinstance(e, ValueError) else ""
            self.doc.problem(
                path,
                f"YAML reads this value as {kind}, and it is not a valid one{reason}",
                "Quote it if you meant text, or correct it",
                line=_line(event),
            )
            return text

    def bad_tag(self, tag: str, path: Path, line: int | None = None) -> None:
        self.doc.problem(
            path,
            f"YAML tag '{shown_tag(tag)}' is not allowed",
            "Remove it: a tenants file holds plain text, numbers, true/false, lists and "
            "mappings (quote a value to make it text)",
            line=line,
        )

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
