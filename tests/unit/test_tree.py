"""The tree's rules, read from the source: one-way dependencies (``service`` -> ``router`` ->
``engine``), no import cycle, no module over 300 lines, nothing outside ``tests/`` imports it.

Imports inside functions count (a cycle held open by a function-level import is still a cycle);
imports under ``if TYPE_CHECKING:`` do not (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
LAYERS = ("engine", "router", "service")  # each may import only the ones before it
ELSEWHERE = ("benchmarks", "testkit", "clients")
MAX_LINES = 300


def _sources(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py") if "results" not in p.parts)


def _module(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path = ROOT) -> set[str]:
    """The dotted names ``path`` imports (``from a import b``: ``a`` and ``a.b``), relative ones resolved."""
    names: set[str] = set()
    package = _module(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for child in node.orelse:
                    self.visit(child)
            else:
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            names.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]) if node.level \
                else node.module or ""
            base = base.strip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)

    Visitor().visit(ast.parse(path.read_text()))
    return names


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in _sources(*LAYERS)}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target in imported(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                found.append(sorted([node, *component]))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_checker_reads_relative_and_function_level_imports(tmp_path) -> None:
    module = tmp_path / "engine" / "store" / "sources.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import manager\n"
        "from ..launch.plan import arguments\n"
        "if TYPE_CHECKING:\n    from service.gateway import Gateway\n"
        "def f():\n    import torch\n"
    )
    assert imported(module, tmp_path) == {
        "typing", "typing.TYPE_CHECKING", "engine.store", "engine.store.manager",
        "engine.launch.plan", "engine.launch.plan.arguments", "torch",
    }


def test_no_import_cycle() -> None:
    graph = _graph()
    assert len(graph) > 100
    assert cycles(graph) == []


def test_dependencies_go_one_way() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if LAYERS.index(target.split(".")[0]) > LAYERS.index(module.split(".")[0])
    ]
    assert upward == []


def test_no_module_over_300_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _sources(*LAYERS, *ELSEWHERE)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_nothing_outside_the_tests_imports_them() -> None:
    users = [str(p.relative_to(ROOT)) for p in _sources(*LAYERS, *ELSEWHERE)
             if any(name == "tests" or name.startswith("tests.") for name in imported(p))]
    assert users == []
