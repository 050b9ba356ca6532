"""Packages that import their exports on first use: the table agrees with the types, and a
light import stays light.

``corestone``, ``corestone.cache``, ``corestone.resilience`` and ``corestone.testing``
export some names lazily (corestone/_lazy.py). The names a type checker sees (imports under
``TYPE_CHECKING``) and the table that imports them at run time are written twice, so this
test keeps them equal; and the import cost the laziness buys is checked by which modules
get loaded, never by a time.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

LAZY_PACKAGES = [
    "corestone",
    "corestone.cache",
    "corestone.email",
    "corestone.email.providers",
    "corestone.events",
    "corestone.push",
    "corestone.resilience",
    "corestone.testing",
]


def _tables(package: str) -> tuple[dict[str, str], dict[str, str]]:
    """(names imported under TYPE_CHECKING → module, lazy_exports' table)."""
    source = Path(importlib.import_module(package).__file__ or "").read_text()
    typed: dict[str, str] = {}
    table: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module:
                    typed |= {alias.asname or alias.name: stmt.module for alias in stmt.names}
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("lazy_exports"):
            table = ast.literal_eval(node.args[1])
    return typed, table


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_the_lazy_table_names_what_type_checkers_see(package: str) -> None:
    """Every lazily exported name is imported under TYPE_CHECKING from the same module."""
    typed, table = _tables(package)

    assert table
    assert {name: typed.get(name) for name in table} == table


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_exported_name_resolves_and_is_listed(package: str) -> None:
    """Each name in __all__ can be read (lazily or not) and dir() shows it."""
    module = importlib.import_module(package)
    _, table = _tables(package)

    assert set(table) <= set(module.__all__) | {"__version__"}
    for name in module.__all__:
        assert getattr(module, name) is not None
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = module.nope


def _third_party_loaded_by(statement: str) -> list[str]:
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        f"{statement}\n"
        "new = {m.partition('.')[0] for m in set(sys.modules) - before}\n"
        "print(json.dumps(sorted(n for n in new if n not in sys.stdlib_module_names)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return list(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    ["import corestone", "from corestone.cache import MemoryCache", "import corestone.errors"],
)
def test_light_imports_load_no_third_party_module(statement: str) -> None:
    """`import corestone` and the in-memory cache load corestone's own modules only:
    no pydantic-settings, SQLAlchemy, Redis or prometheus_client (the import-time figure in
    docs/installation.md depends on this)."""
    assert _third_party_loaded_by(statement) == ["corestone"]


def test_the_version_is_the_one_in_pyproject() -> None:
    """corestone.__version__ comes from the installed metadata, matching pyproject.toml."""
    import tomllib

    import corestone

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert corestone.__version__ == pyproject["project"]["version"]


def test_the_version_of_a_source_tree_never_installed_is_unknown_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run from a checkout that was never installed (no metadata), ``corestone.__version__``
    is a valid PEP 440 placeholder, so ``getattr(module, "__version__", None)`` (what tools
    do) and ``from corestone import *`` work; the CLI says the same."""
    import importlib.metadata

    import corestone
    from corestone.cli import package_version

    def no_metadata(distribution: str) -> str:
        raise importlib.metadata.PackageNotFoundError(distribution)

    monkeypatch.setattr(importlib.metadata, "version", no_metadata)
    monkeypatch.delitem(vars(corestone), "__version__", raising=False)

    assert getattr(corestone, "__version__", None) == "0+unknown"
    assert package_version() == "0+unknown"
