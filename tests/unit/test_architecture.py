"""The import structure of docs/architecture.md: no cycles, leaves, layers pointing down."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import corestone

ROOT = Path(corestone.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("corestone", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.Module) -> set[str]:
    """Modules imported at import time (not under ``if TYPE_CHECKING:``, not in functions)."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If):
                test = node.test
                if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                    visit(node.orelse)
                    continue
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {
        name: {m for m in _runtime_imports(ast.parse(path.read_text())) if m in modules} - {name}
        for name, path in modules.items()
    }


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_no_package_has_an_import_cycle_inside_it() -> None:
    """Inside a package no module imports, directly or not, a module that imports it back.

    Edges into the package's own ``__init__`` are left out: it re-exports its modules.
    """
    graph = _graph()
    cycles: list[list[str]] = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for target in graph[node]:
                if _package(target) != _package(start) or target == _package(target):
                    continue
                if target == start:
                    cycles.append(path)
                elif target not in path:
                    stack.append((target, [*path, target]))

    assert cycles == []


@pytest.mark.parametrize("leaf", ["corestone.errors", "corestone.clock", "corestone.urls"])
def test_leaves_import_nothing_of_corestone(leaf: str) -> None:
    """errors, clock and urls are the bottom layer: they depend on no other corestone module."""
    assert _graph()[leaf] == set()


LOWER_MAY_NOT_IMPORT = {
    "corestone.observability": {"corestone.resilience", "corestone.cache", "corestone.db"},
    "corestone.resilience": {"corestone.cache", "corestone.db", "corestone.sagas"},
    "corestone.cache": {"corestone.db", "corestone.sagas", "corestone.runtime", "corestone.web"},
    "corestone.db": {"corestone.sagas", "corestone.runtime", "corestone.web"},
    "corestone.sagas": {"corestone.runtime", "corestone.web"},
}


ABOVE_THEIR_PACKAGE = {
    # Alert delivery keeps its history, claims and silences in the database and sends
    # through a breaker and Retry: it sits above db and resilience (docs/architecture.md),
    # though it lives beside the alert engine. Nothing lower in observability imports it.
    f"corestone.observability.alerts.{name}"
    for name in ("dispatcher", "silences", "store", "tables", "channels.webhook")
}


@pytest.mark.parametrize("package", sorted(LOWER_MAY_NOT_IMPORT))
def test_layers_only_import_downwards(package: str) -> None:
    """A lower layer never imports a higher one at run time (docs/architecture.md)."""
    forbidden = LOWER_MAY_NOT_IMPORT[package]
    upward = {
        (module, target)
        for module, targets in _graph().items()
        if _package(module) == package and module not in ABOVE_THEIR_PACKAGE
        for target in targets
        if _package(target) in forbidden or target in ABOVE_THEIR_PACKAGE
    }

    assert upward == set()


def test_no_module_is_over_550_lines() -> None:
    """Modules stay small enough to read in one sitting: none of corestone's passes 550 lines."""
    long = {
        str(path.relative_to(ROOT)): lines
        for path in ROOT.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 550
    }

    assert long == {}
