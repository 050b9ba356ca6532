"""The public API: every public module's __all__ is real, sorted, complete and unique.

"Public" is every module of corestone whose dotted path has no part starting with ``_``.
Sorted means ruff's RUF022 order (constants, then classes, then the rest; the same rule
the linter enforces). Complete means every public name a module defines itself (a class,
a function, an assigned constant) is exported, or its name starts with ``_``; a package
never carries an unexported public name taken from a corestone module.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import ParamSpec, TypeVar

import pytest

import corestone
import corestone.errors

MODULES = sorted(
    [info.name for info in pkgutil.walk_packages(corestone.__path__, "corestone.")] + ["corestone"]
)
PUBLIC_MODULES = [
    name for name in MODULES if not any(part.startswith("_") for part in name.split("."))
]
PACKAGES = [name for name in PUBLIC_MODULES if hasattr(importlib.import_module(name), "__path__")]


def _isort_key(name: str) -> tuple[int, list[object]]:
    """RUF022's order: SCREAMING_CASE, then CamelCase, then the rest; digits compared as numbers."""
    group = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
    return group, natural


def _defined_names(module: ModuleType) -> set[str]:
    """Public names a module defines itself: classes, functions and assigned constants."""
    tree = ast.parse(Path(inspect.getfile(module)).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {
        name
        for name in names
        if not name.startswith("_")
        and name not in {"log", "logger"}  # a module's own logger is not API
        and not isinstance(getattr(module, name, None), TypeVar | ParamSpec)
    }


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_module_declares_all(name: str) -> None:
    """A public module says what it exports."""
    assert isinstance(getattr(importlib.import_module(name), "__all__", None), list)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_exported_name_exists(name: str) -> None:
    """Each name listed in __all__ can be imported from its module."""
    module = importlib.import_module(name)

    assert [n for n in module.__all__ if not hasattr(module, n)] == []


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_without_duplicates(name: str) -> None:
    """__all__ is in RUF022 order and lists nothing twice, so additions are easy to review."""
    exported = list(importlib.import_module(name).__all__)

    assert exported == sorted(exported, key=_isort_key)
    assert len(set(exported)) == len(exported)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_everything_public_is_exported(name: str) -> None:
    """A public name a module defines is in its __all__; anything else starts with _."""
    module = importlib.import_module(name)

    assert _defined_names(module) - set(module.__all__) == set()


@pytest.mark.parametrize("name", PACKAGES)
def test_packages_export_what_they_import_from_corestone(name: str) -> None:
    """A package never carries an unexported public name taken from a corestone module."""
    package = importlib.import_module(name)
    stray = {
        attr
        for attr, value in vars(package).items()
        if not attr.startswith("_")
        and not inspect.ismodule(value)
        and str(getattr(value, "__module__", "")).startswith("corestone")
        and attr not in package.__all__
    }

    assert stray == set()


def test_every_error_is_exported_from_the_root() -> None:
    """All error classes are importable from corestone itself, as DESIGN promises."""
    errors = {
        name
        for name, value in inspect.getmembers(corestone.errors, inspect.isclass)
        if issubclass(value, corestone.errors.CorestoneError)
    }

    assert errors <= set(corestone.__all__)
    assert errors == set(corestone.errors.__all__)


def test_the_composition_root_names_are_at_the_top() -> None:
    """Settings and Infrastructure, the names every program starts with, are top-level."""
    assert {"Infrastructure", "Settings", "load_settings", "Services"} <= set(corestone.__all__)
