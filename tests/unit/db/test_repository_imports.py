"""The repository's helper modules never import the repository back: no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import corestone.db

_PACKAGE = Path(corestone.db.__file__).parent
_REPOSITORY_MODULES = frozenset(
    {
        "repository",
        "_scope",
        "_writes",
        "_bulk",
        "_cache",
        "_model_info",
        "scoping",
        "filters",
        "_filter_values",
        "pagination",
        "audit",
        "models",
    }
)


def _imports(module: str) -> set[str]:
    """The ``corestone.db`` modules ``module`` imports, TYPE_CHECKING imports included."""
    tree = ast.parse((_PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("corestone.db."):
                target = name.removeprefix("corestone.db.").split(".")[0]
                if (_PACKAGE / f"{target}.py").exists() and target != module:
                    found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    return {path.stem: _imports(path.stem) for path in _PACKAGE.glob("*.py")}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen: set[str] = set()
    stack = list(graph.get(start, ()))
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(graph.get(node, ()))
    return False


def test_no_repository_module_is_on_an_import_cycle() -> None:
    """No repository module can reach itself through imports inside corestone.db."""
    graph = _graph()
    on_cycles = sorted(m for m in _REPOSITORY_MODULES & graph.keys() if _reaches(graph, m, m))
    assert on_cycles == []


def test_no_helper_imports_the_repository() -> None:
    """Helpers take a RepositoryScope; none of them imports repository.py, even for types."""
    graph = _graph()
    importers = {m for m, targets in graph.items() if "repository" in targets}
    assert sorted(importers - {"__init__"}) == []  # the package re-exports it, nothing more
