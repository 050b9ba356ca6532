"""Transactions depend on a small protocol, not on Database; corestone.db has no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import corestone.db
from corestone.cache.tiered import TieredCache
from corestone.config import Settings
from corestone.db import TRANSACTION_RETRY, Database, TransactionBackend
from corestone.observability.metrics import Metrics
from corestone.resilience import Retry
from corestone.runtime import Infrastructure
from corestone.sagas import STEP_RETRY

DB_PACKAGE = Path(corestone.db.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every corestone.db module ``path`` imports, at run time or for type checking."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "corestone.db":
                found.update(f"corestone.db.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    modules = {f"corestone.db.{p.stem}" for p in DB_PACKAGE.glob("*.py") if p.stem != "__init__"}
    return found & modules


def _graph() -> dict[str, set[str]]:
    return {
        f"corestone.db.{path.stem}": _imports(path)
        for path in DB_PACKAGE.glob("*.py")
        if path.stem != "__init__"
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the path that closes it."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            found.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    return found


def test_transactions_never_import_the_database() -> None:
    """transactions.py (and what it imports in corestone.db) never imports database.py."""
    graph = _graph()
    reached: set[str] = set()
    stack = ["corestone.db.transactions"]
    while stack:
        module = stack.pop()
        for target in graph[module] - reached:
            reached.add(target)
            stack.append(target)
    assert "corestone.db.database" not in reached


def test_no_import_cycle_inside_corestone_db() -> None:
    """No module of corestone.db imports, directly or not, a module that imports it back."""
    assert list(_cycles(_graph())) == []


def test_database_is_a_transaction_backend() -> None:
    """Database provides every member of the TransactionBackend protocol, publicly."""
    database: TransactionBackend = Database("sqlite+aiosqlite://", metrics=Metrics())
    members = {"cache", "signing_key", "session_for", "record_outcome", "record_retry"}
    assert all(hasattr(database, name) for name in members)
    assert not any(hasattr(database, name) for name in ("_session_for", "_record_outcome"))


def test_database_gets_its_cache_and_signing_key_by_construction() -> None:
    """from_settings takes cache= and keeps signing_key; Infrastructure passes its cache in."""
    settings = Settings(database_url="sqlite+aiosqlite://", env="test")
    cache = TieredCache.from_settings(settings, metrics=Metrics())
    database = Database.from_settings(settings, metrics=Metrics(), cache=cache)
    assert database.cache is cache
    assert database.signing_key == settings.signing_key
    infra = Infrastructure(settings)
    assert infra.db.cache is infra.cache


def test_one_retry_policy_for_transactions_and_saga_steps() -> None:
    """Transactions and saga steps use corestone.resilience.Retry, with its field names."""
    assert isinstance(TRANSACTION_RETRY, Retry)
    assert isinstance(STEP_RETRY, Retry)
    assert TRANSACTION_RETRY.deadline_seconds == 10.0
    assert not hasattr(corestone.db, "RetryPolicy")
    assert not hasattr(corestone.db, "NO_RETRY")
