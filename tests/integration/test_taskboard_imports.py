"""taskboard is built only on corestone's public API (DESIGN §2).

Every ``from corestone… import X`` in taskboard must name a public module (no
``_private`` segment) and an X that module exports in its ``__all__``; a plain
``import corestone…`` must name a public module.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import taskboard

SOURCE = Path(taskboard.__file__).parent


def _corestone_imports() -> Iterator[tuple[str, str, str | None]]:
    """(where, module, name) for every corestone import in taskboard; name None for ``import``."""
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(SOURCE.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] == "corestone":
                    for alias in node.names:
                        yield where, node.module, alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "corestone":
                        yield where, alias.name, None


def _problem(module_name: str, name: str | None) -> str | None:
    private = [part for part in module_name.split(".") if part.startswith("_")]
    if private:
        return f"{module_name} is a private module"
    if name is None:
        return None
    exported = getattr(importlib.import_module(module_name), "__all__", ())
    return None if name in exported else f"{name} is not in {module_name}.__all__"


def test_the_walk_sees_taskboards_corestone_imports() -> None:
    """The scan finds taskboard's imports, so an empty result below means something."""
    modules = {module for _, module, _ in _corestone_imports()}
    assert {"corestone", "corestone.db", "corestone.web"} <= modules


def test_taskboard_imports_only_exported_names_of_public_modules() -> None:
    """Every corestone name taskboard imports is in its public module's ``__all__``."""
    problems = [
        f"{where}: {problem}"
        for where, module, name in _corestone_imports()
        if (problem := _problem(module, name)) is not None
    ]
    assert problems == []


def test_a_private_module_or_unexported_name_is_reported() -> None:
    """The check refuses a ``_private`` module path and a name missing from ``__all__``."""
    assert _problem("corestone.db._model_info", "model_info") is not None
    assert _problem("corestone.db", "Repository") is None
    assert _problem("corestone.db", "compile_filter") is not None
    assert _problem("corestone.db._bulk", None) is not None
