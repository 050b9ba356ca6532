"""The public API: every package's __all__ is real, sorted and without duplicates."""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType

import pytest

import corestone
import corestone.errors

PUBLIC_PACKAGES = [
    "corestone",
    "corestone.db",
    "corestone.observability",
    "corestone.resilience",
    "corestone.sagas",
    "corestone.web",
    "corestone.testing",
]


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_every_exported_name_exists(name: str) -> None:
    """Each name listed in __all__ can be imported from the package."""
    module = _module(name)

    missing = [exported for exported in module.__all__ if not hasattr(module, exported)]

    assert missing == []


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_all_is_sorted(name: str) -> None:
    """__all__ is kept in (case-sensitive) sorted order, so additions are easy to review."""
    exported = _module(name).__all__

    assert sorted(exported) == exported


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_all_has_no_duplicates(name: str) -> None:
    """No name is listed twice."""
    exported = _module(name).__all__

    assert len(set(exported)) == len(exported)


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
