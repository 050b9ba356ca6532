"""The modules of corestone.resilience import each other in one direction only."""

from __future__ import annotations

import ast
from pathlib import Path

import corestone.resilience

PACKAGE = "corestone.resilience"


def _imports(path: Path, module: str) -> set[str]:
    """Every corestone.resilience module ``path`` imports, anywhere in the file.

    Imports inside functions and ``if TYPE_CHECKING:`` blocks count too: a helper that
    imports the class it helps lazily is still a circle.
    """
    found: set[str] = set()
    package_parts = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package_parts[: len(package_parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _graph() -> dict[str, set[str]]:
    root = Path(corestone.resilience.__file__).parent
    modules = {
        (PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"): path
        for path in root.glob("*.py")
    }
    return {
        module: {name for name in _imports(path, module) if name in modules and name != module}
        for module, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (as a path that comes back to its start), or []."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        for target in sorted(graph[module]):
            found = visit(target, [*path, module])
            if found:
                return found
        done.add(module)
        return []

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return []


def test_no_import_cycle_inside_the_resilience_package() -> None:
    """No module of corestone.resilience imports, even lazily, one that imports it back."""
    graph = _graph()
    assert f"{PACKAGE}.guard" in graph
    assert _cycle(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a two-module circle is reported as a path."""
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []
