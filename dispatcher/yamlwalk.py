"""Turn libyaml's parser events into plain Python values, within bounds, keeping every line.

PyYAML's own composer (in C with ``CSafeLoader``) recurses once per nesting level, so a deeply
nested file crashes the process, and it hands over alias-expanded graphs with no limit on
their size. Here libyaml only *parses* (its event parser is a state machine, not recursive), and
this module builds the values itself, one event at a time, with every bound checked before it
can be exceeded:

- nesting is bounded (so the walker's own recursion stays shallow);
- so are the values produced in all, and the values kept under anchors (``&name``);
- aliases (``*name``), which YAML expands at every use, may add only so many values, which
  stops an expansion bomb ("billion laughs") after a fraction of a second;
- an alias inside the value it names, or one used before its anchor, is a problem, not a loop.

The bounds are in :mod:`dispatcher.yamllimits`. One exceeded raises
:class:`~dispatcher.yamllimits.Limit` (reading stops there); any other mistake (a duplicate
key, an explicit tag) is added to the document and reading goes on::

    walker = Walker(doc, os.environ, CSafeLoader(text).get_event)
    doc.data = walker.document()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import yaml

from . import yamllimits as limits
from .problems import Path
from .yamlscalars import MAP, SCALAR_TAGS, SEQ, STR, construct, expand, resolve, shown_tag

if TYPE_CHECKING:
    from .yamlfile import YamlDocument

_MERGE: Any = object()  # what key() returns for `<<`
_Scalar, _Alias = yaml.ScalarEvent, yaml.AliasEvent
_MapStart, _SeqStart = yaml.MappingStartEvent, yaml.SequenceStartEvent
_MapEnd, _SeqEnd = yaml.MappingEndEvent, yaml.SequenceEndEvent
_UNSET: Any = object()


def _line(event: Any) -> int:
    return int(event.start_mark.line) + 1


class Walker:
    """Builds one document's values from its events, filling in its lines and problems."""

    def __init__(
        self, doc: YamlDocument, environ: Mapping[str, str], get_event: Callable[[], Any]
    ) -> None:
        self.doc = doc
        self.environ = environ
        self.parser_next = get_event
        #: Where the next event comes from: the parser, the recorder, or an alias's replay.
        self.next: Callable[[], Any] = get_event
        #: The events of anchored values, in order; an alias replays its slice.
        self.recorded: list[Any] = []
        #: Anchor name -> its slice of ``recorded``; ``None`` while the value is still open.
        self.anchors: dict[str, tuple[int, int] | None] = {}
        self.anchored = 0  # values recorded
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
        self.keep(event)
        return event

    def keep(self, event: Any) -> None:
        """Record an event of an anchored value, for its aliases to replay."""
        if type(event) is not _MapEnd and type(event) is not _SeqEnd:
            self.anchored += 1
            if self.anchored > limits.MAX_ANCHORED:
                raise limits.too_much_anchored(_line(event))
        self.recorded.append(event)

    def count(self, event: Any, expanded: bool = False) -> None:
        """One more value (``event``): from the file itself, or from expanding an alias."""
        if expanded or self.replaying:
            self.expanded += 1
            if self.expanded > limits.ALIAS_FLOOR + limits.ALIAS_RATIO * self.written:
                raise limits.too_much_expanded(self.alias_line)
        else:
            self.written += 1
        if self.written + self.expanded > limits.MAX_VALUES:
            self.too_many(event)

    def too_many(self, event: Any) -> None:
        raise limits.too_many_values(self.alias_line if self.replaying else _line(event))

    def check_depth(self, event: Any, depth: int) -> None:
        if depth >= limits.MAX_DEPTH:
            raise limits.too_deep(_line(event))

    def value(self, event: Any, path: Path, depth: int) -> Any:
        """The value starting with ``event`` (already read), at ``path``, ``depth`` levels in."""
        kind = type(event)
        if kind is _Alias:
            return self.alias(event, path, depth)
        if self.replaying:
            self.count(event)
        else:  # count() inlined: this is the hot path of a large file
            self.written += 1
            if self.written + self.expanded > limits.MAX_VALUES:
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
            if tag is not None and tag not in ("!", MAP):
                self.bad_tag(tag, path)
            result: Any = self.mapping(path, depth + 1)
        else:
            if tag is not None and tag not in ("!", SEQ):
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
            self.keep(event)
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
            self.keep(event)
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
            key = self.key(event, path, depth, line)
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
                at = (*path, key)
                lines[at] = line
                result[key] = self.value(event, at, depth)
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

    def key(self, event: Any, path: Path, depth: int, line: int) -> Any:
        """A mapping key: text (or a YAML 1.1 number or boolean), ``_MERGE``, or ``_UNSET``
        for a list, mapping or broken alias (reported). Keys are never ``${VAR}``-expanded."""
        if type(event) is _Alias:  # (``line`` is the key's: the alias's, if it is one)
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
            tag = resolve(text)
            if tag is None:
                return text
        elif tag not in SCALAR_TAGS:
            self.bad_tag(tag, path, line)
            return text
        if tag == STR:
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
            if event.tag not in (None, "!", SEQ):
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
            tag = resolve(text) if tag is None and event.implicit[0] else None
            if tag is None:
                return self.expand(text, path) if "${" in text else text
        elif tag not in SCALAR_TAGS:
            self.bad_tag(tag, path)
            return text
        if tag == STR:
            return self.expand(text, path) if "${" in text else text
        value = self.construct(tag, text, path, event)
        if not event.style and not isinstance(value, str):  # remembered for "quote it"
            self.doc.plain_scalars[path] = text
        return value

    def construct(self, tag: str, text: str, path: Path, event: Any) -> Any:
        """A YAML 1.1 number, boolean, null or date; its text (and a problem) if invalid."""
        try:
            return construct(tag, text)
        except ValueError as e:
            fix = "Quote it if you meant text, or correct it"
            self.doc.problem(path, str(e), fix, line=_line(event))
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

        def missing(name: str) -> None:
            self.doc.problem(
                path,
                f"environment variable {name} is not set",
                f"Set it, or give a default: ${{{name}:-...}}",
            )

        return expand(text, self.environ, missing)
