"""The shape of ``corestone.cache``: no import cycle between its modules, none too large."""

from __future__ import annotations

import ast
from pathlib import Path

import corestone.cache

PACKAGE = "corestone.cache"
SOURCE = Path(corestone.cache.__file__).parent


def _imports() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports (any import, even
    under TYPE_CHECKING or inside a function: a helper must not know the class it helps)."""
    modules = {path.stem for path in SOURCE.glob("*.py") if path.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name in modules:
        tree = ast.parse((SOURCE / f"{name}.py").read_text())
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                if node.module == PACKAGE:  # ``from corestone.cache import _lua`` or a name
                    targets = [
                        f"{PACKAGE}.{a.name}" if a.name in modules else PACKAGE for a in node.names
                    ]
                else:
                    targets = [node.module]
            else:
                continue
            for target in targets:
                if target == PACKAGE:
                    edges.add("__init__")
                elif target.startswith(f"{PACKAGE}."):
                    edges.add(target.removeprefix(f"{PACKAGE}.").split(".")[0])
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_no_module_of_the_cache_imports_one_that_imports_it_back() -> None:
    """No import cycle inside corestone.cache, the package __init__ included."""
    graph = _imports()
    graph["__init__"] = set(graph) - {"__init__"}  # the package imports its modules
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a two-module loop is reported."""
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_helpers_take_the_core_not_the_cache() -> None:
    """Loading, ops and build helpers never import the TieredCache module."""
    graph = _imports()
    for helper in ("_core", "_loading", "_ops", "_build", "_flights", "_remote"):
        assert "tiered" not in graph[helper], helper


def test_no_cache_module_is_over_550_lines() -> None:
    """Small modules: none of the cache's is longer than 550 lines."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in SOURCE.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 550} == {}
