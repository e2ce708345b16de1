"""The package's shape (issue 16): no import cycle anywhere in ``dispatcher/``.

Imports are read from the source (module level, outside ``if TYPE_CHECKING:``; an import inside
a function is a deliberate late one and not counted), so a cycle fails here rather than as an
``ImportError`` on some import order in production.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "dispatcher"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports when it is imported."""
    name = module_name(path)
    base = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                self.generic_visit(node)

        def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
            pass

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            target = node.module or ""
            if node.level:
                package = base
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                target = f"{package}.{node.module}" if node.module else package
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules
            found.update(submodules or ({target} & modules) - {name})

    Visitor().visit(ast.parse(path.read_text()))
    return found


def test_no_import_cycle() -> None:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports(path, set(paths)) for name, path in paths.items()}
    cycles = []

    def walk(name: str, stack: list[str]) -> None:
        for imported in sorted(graph[name]):
            if imported in stack:
                cycles.append(" -> ".join([*stack[stack.index(imported) :], imported]))
            elif len(stack) < len(graph):
                walk(imported, [*stack, imported])

    for name in graph:
        walk(name, [name])
    assert not cycles, "\n".join(sorted(set(cycles)))
    assert graph.get("dispatcher.dispatch")  # the walk saw imports
