"""Where a request's instructions go, outside the tenant's app: by layer, then by function.

Callgrind attributes instructions to C functions, and every Python function of CPython 3.11
runs inside the same ``_PyEval_EvalFrameDefault``: its own profile cannot tell
``Routes.route`` from ``Dispatcher.__call__``. So ``--annotate SIDE`` measures two ways:

- **by layer, exactly**: one request is watched (natively) for the WSGI callables it passes
  through, ``(environ, start_response)`` methods down to the tenant's Flask app; each is then
  measured like a side, entered directly with the environ it received. A layer's own cost is
  its figure minus the next one's. As precise as the main table.
- **by function, approximately**: a ``sys.setprofile`` hook asks callgrind for a dump at every
  call and return of a Python or C function outside the app (bench/callgrind.py), and each
  dump's instructions go to the function on top of the stack. The app (``Flask.__call__`` and
  the body it returns) is one opaque step; the server loop is left out. The hook's own cost
  per step, measured in the same run on an empty function and an empty C call, is taken off:
  a few hundred instructions of error per step remain. Each request takes over a second under
  the hook, so work a worker does once a second runs on every one of them here::

    layers = discover_layers(dispatcher, environ)        # [(name, callable, environ), ...]
    annotator = Annotator(requests.fast_dump, server_code=serve.__code__)
    annotator.calibrate(); with annotator: serve(...)
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

APP = "(the tenant's app)"
SERVER = "(server)"
#: Methods of a WSGI body: a call to one on the body the app returned is the app's.
_BODY_METHODS = ("__iter__", "__next__", "close")
_SITE = "site-packages/"


def code_name(code: CodeType) -> str:
    path = code.co_filename
    if _SITE in path:
        path = path.partition(_SITE)[2]
    elif Path(path).is_absolute():
        path = "/".join(Path(path).parts[-2:])
    return f"{code.co_qualname}  ({path}:{code.co_firstlineno})"


def c_name(function: Any) -> str:
    owner = getattr(function, "__self__", None)
    qualname = getattr(function, "__qualname__", None) or repr(function)
    module = getattr(function, "__module__", None)
    if module is None and owner is not None and not isinstance(owner, type(sys)):
        module = type(owner).__module__
    prefix = "" if module in (None, "builtins") else f"{module}."
    return f"{prefix}{qualname}  (C)"


# --- By layer ----------------------------------------------------------------------------------


def discover_layers(app: Any, environ: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """The WSGI methods one request passes through, outermost first, down to (and including)
    the tenant's Flask app: a name, a callable that enters there, and the environ it got."""
    from flask import Flask

    found: list[tuple[str, Any, dict[str, Any]]] = []
    app_codes = (Flask.__call__.__code__, Flask.wsgi_app.__code__)
    done = False

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal done
        if done or event != "call":
            return
        code = frame.f_code
        names = code.co_varnames[: code.co_argcount]
        if names[-2:] != ("environ", "start_response") or names[0] != "self":
            return
        owner = frame.f_locals["self"]
        # The method whose code this is: for ``super().__call__`` not the one ``owner.__call__``
        # finds first.
        function = next(
            (
                f
                for klass in type(owner).__mro__
                if getattr(f := klass.__dict__.get(code.co_name), "__code__", None) is code
            ),
            None,
        )
        if function is None:
            return
        entry = types.MethodType(function, owner)
        label = APP if code in app_codes else code_name(code)
        found.append((label, entry, dict(frame.f_locals["environ"])))
        done = code in app_codes

    seen: list[str] = []
    sys.setprofile(hook)
    try:
        body = app(dict(environ), lambda status, headers, exc_info=None: seen.append(status))
    finally:
        sys.setprofile(None)
    b"".join(body)
    getattr(body, "close", lambda: None)()
    return found


def layer_table(layers: list[str], ir: dict[str, list[float]]) -> str:
    """Inclusive and own instructions per layer (medians over the rounds)."""
    import statistics

    def median(label: str) -> float:
        return statistics.median(ir[label])

    app = median(APP) if APP in ir else 0.0
    reached = f"the tenant's app alone: {app:,.0f} Ir" if APP in ir else "no tenant app"
    lines = [
        f"{'beyond app':>10} {'own':>8}  layer (exact: each measured entering there; {reached})"
    ]
    for i, label in enumerate(layers):
        if label == APP:
            break
        inner = median(layers[i + 1]) if i + 1 < len(layers) else 0.0
        own = median(label) - inner
        lines.append(f"{median(label) - app:>10,.0f} {own:>8,.0f}  {'  ' * i}{label}")
    return "\n".join(lines)


# --- By function -------------------------------------------------------------------------------


class Annotator:
    """A profile hook that dumps at every step outside the app and records what happened.

    ``events[i]`` is the event that ended dump ``i``: ``(kind, name)``; the names are
    resolved after the run (:meth:`named`), so the hook does as little as it can.
    """

    def __init__(self, dump: Callable[[], None], server_code: CodeType) -> None:
        from flask import Flask

        self._dump = dump
        self._server_code = server_code
        self._app_code = Flask.__call__.__code__
        self._app_frame: FrameType | None = None
        self._bodies: set[int] = set()
        self.events: list[tuple[str, Any]] = []
        self.calibration: list[tuple[str, Any]] = []

    def hook(self, frame: FrameType, event: str, arg: Any) -> None:
        if self._app_frame is not None:  # inside the app: one step until its frame returns
            if frame is self._app_frame and event == "return":
                self._dump()
                self._app_frame = None
                self._bodies.add(id(arg))
                self.events.append(("return", None))
            return
        self._dump()
        if event == "call":
            code = frame.f_code
            if code is self._app_code or (
                code.co_name in _BODY_METHODS and id(frame.f_locals.get("self")) in self._bodies
            ):
                self._app_frame = frame
                self.events.append(("call", APP))
            else:
                self.events.append(("call", code))
        elif event == "c_call":
            self.events.append(("c_call", arg))
        else:
            self.events.append((event, None))

    def calibrate(self, rounds: int = 30) -> None:
        """Steps of known content: an empty Python function, an empty C call."""
        measured, self.events = self.events, []
        sys.setprofile(self.hook)
        for _ in range(rounds):
            _empty()
            len(())
        sys.setprofile(None)
        self.calibration, self.events = self.events, measured

    def named(self, events: list[tuple[str, Any]]) -> list[tuple[str, str | None]]:
        named: list[tuple[str, str | None]] = []
        for kind, what in events:
            if what is None or what == APP:
                named.append((kind, what))
            elif kind == "call":
                named.append((kind, SERVER if what is self._server_code else code_name(what)))
            else:
                named.append((kind, c_name(what)))
        return named

    def __enter__(self) -> Annotator:
        sys.setprofile(self.hook)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)


def _empty() -> None:
    pass


@dataclass
class Node:
    name: str
    calls: float = 0
    self_ir: float = 0
    children: dict[str, Node] = field(default_factory=dict)

    def inclusive(self) -> float:
        if self.name == APP:
            return 0.0
        return self.self_ir + sum(c.inclusive() for c in self.children.values())


def replay(
    events: list[tuple[str, str | None]], counts: list[int], overhead: float, requests: int
) -> Node:
    """The call tree per request: each dump's instructions to the path open before its event."""
    root = Node("")
    path: list[Node] = [root]
    for (kind, name), ir in zip(events, counts, strict=True):
        path[-1].self_ir += max(ir - overhead, 0) / requests
        if kind in ("call", "c_call"):
            assert name is not None
            node = path[-1].children.setdefault(name, Node(name))
            node.calls += 1 / requests
            path.append(node)
        elif len(path) > 1:  # not the return from installing the hook
            path.pop()
    return root


def hook_cost(events: list[tuple[str, str | None]], counts: list[int]) -> float:
    """Instructions per step that are the hook's: the calibration's steps inside an empty
    Python function and inside an empty C call (the least of each, averaged)."""
    empties = (code_name(_empty.__code__), c_name(len))
    inside: dict[str, list[int]] = {}
    opened: str | None = None
    for (kind, name), ir in zip(events, counts, strict=True):
        if opened in empties:
            inside.setdefault(opened, []).append(ir)
        opened = name if kind in ("call", "c_call") else None
    if len(inside) != len(empties):
        raise SystemExit(f"the calibration saw {sorted(inside)}, not {empties}")
    return sum(min(values) for values in inside.values()) / len(inside)


def function_report(root: Node, overhead: float, top: int = 25, floor: float = 100) -> str:
    """The top functions by inclusive instructions, then the call tree."""
    server = root.children.get(SERVER, Node(SERVER))
    # What the server loop calls that is not the app: the dispatcher's own callables, and the
    # body it wraps around the app's (not the loop's own C calls: next(), dict(), getattr()).
    served = [c for c in server.children.values() if not c.name.endswith("(C)")]
    tops = [
        c
        for c in (*root.children.values(), *served)
        if c.name not in (SERVER, APP) and "bench/annotate.py" not in c.name
    ]
    flat: dict[str, list[float]] = {}

    def walk(node: Node, above: frozenset[str]) -> None:
        if node.name == APP:
            return
        entry = flat.setdefault(node.name, [0.0, 0.0, 0.0])
        if node.name not in above:  # recursion: count the outermost call only
            entry[0] += node.inclusive()
        entry[1] += node.self_ir
        entry[2] += node.calls
        for child in node.children.values():
            walk(child, above | {node.name})

    for node in tops:
        walk(node, frozenset())
    total = sum(n.inclusive() for n in tops)
    lines = [
        f"By function (approximate: the hook's {overhead:,.0f} Ir per step taken off): "
        f"{total:,.0f} Ir per request outside the app and the server loop",
        "",
        f"{'inclusive':>10} {'self':>8} {'calls':>6}  function (top {top}, from {floor:g} Ir)",
    ]
    ranked = [kv for kv in sorted(flat.items(), key=lambda kv: -kv[1][0]) if kv[1][0] >= floor]
    ranked = ranked[:top]
    for fn, (inclusive, self_ir, calls) in ranked:
        lines.append(f"{inclusive:>10,.0f} {self_ir:>8,.0f} {calls:>6.1f}  {fn}")
    lines += [
        "",
        f"{'inclusive':>10} {'self':>8} {'calls':>6}  call tree (under {floor:g} Ir left out)",
    ]

    def tree(node: Node, depth: int) -> None:
        if node.name == APP:
            lines.append(f"{'':>10} {'':>8} {node.calls:>6.1f}  {'  ' * depth}{APP}")
            return
        if node.inclusive() < floor:
            return
        lines.append(
            f"{node.inclusive():>10,.0f} {node.self_ir:>8,.0f} {node.calls:>6.1f}  "
            f"{'  ' * depth}{node.name}"
        )
        for child in sorted(node.children.values(), key=lambda c: -c.inclusive()):
            tree(child, depth + 1)

    for node in sorted(tops, key=lambda c: -c.inclusive()):
        tree(node, 0)
    return "\n".join(lines)
