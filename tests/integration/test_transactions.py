"""Transactions on SQLite and PostgreSQL: outcomes, savepoints, hooks, retries, isolation."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, String, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone import ConflictError
from corestone.db import Database, Transaction
from corestone.observability import Metrics
from corestone.resilience import Retry


class _Base(DeclarativeBase):
    metadata = MetaData()


class Counter(_Base):
    __tablename__ = "counters"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(default=0)


class Note(_Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    body: Mapped[str] = mapped_column(String(100), unique=True)


async def _open(url: str) -> Database:
    database = Database(url, sqlite_busy_timeout_ms=50, metrics=Metrics())
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    async with database.transaction() as tx:
        tx.session.add(Counter(id=1, value=0))
    return database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await _open(database_url)
    yield database
    await database.aclose()


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[Database]:
    database = await _open(postgres_url)
    yield database
    await database.aclose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}"


@pytest.fixture
async def lite(sqlite_url: str) -> AsyncIterator[Database]:
    database = await _open(sqlite_url)
    yield database
    await database.aclose()


async def _notes(db: Database) -> list[str]:
    async with db.transaction(read_only=True) as tx:
        return list(await tx.session.scalars(select(Note.body).order_by(Note.body)))


async def test_commit_and_rollback_with_hooks(db: Database) -> None:
    """A clean block commits and runs commit hooks; a raising one runs rollback hooks."""
    calls: list[str] = []
    async with db.transaction() as tx:
        tx.session.add(Note(body="kept"))
        tx.after_commit(lambda: calls.append("commit-1"))
        tx.after_rollback(lambda: calls.append("never"))
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            tx.session.add(Note(body="dropped"))
            tx.after_commit(lambda: calls.append("never"))
            tx.after_rollback(lambda: calls.append("rollback-1"))
            raise RuntimeError("boom")
    assert calls == ["commit-1", "rollback-1"]
    assert await _notes(db) == ["kept"]


async def test_nested_block_is_a_savepoint(db: Database) -> None:
    """An exception in a nested block undoes only that block; its commit hooks are dropped."""
    calls: list[str] = []

    async def hook(name: str) -> None:
        calls.append(name)

    async with db.transaction() as outer:
        outer.session.add(Note(body="outer"))
        outer.after_commit(lambda: hook("outer-commit"))
        with pytest.raises(ValueError, match="inner"):
            async with db.transaction() as inner:
                assert inner.nested
                inner.session.add(Note(body="inner"))
                await inner.session.flush()
                inner.after_commit(lambda: hook("inner-commit"))
                inner.after_rollback(lambda: hook("inner-rollback"))
                raise ValueError("inner")
        async with db.transaction() as kept:
            kept.session.add(Note(body="second"))
            kept.after_commit(lambda: hook("second-commit"))
    assert await _notes(db) == ["outer", "second"]
    assert calls == ["outer-commit", "second-commit", "inner-rollback"]


async def test_constraint_violation_in_savepoint_leaves_outer_usable(db: Database) -> None:
    """A unique violation inside a savepoint is a ConflictError; the outer transaction commits."""
    async with db.transaction() as tx:
        tx.session.add(Note(body="same"))
        await tx.session.flush()
        with pytest.raises(ConflictError):
            async with db.transaction() as inner:
                inner.session.add(Note(body="same"))
                await inner.session.flush()
        tx.session.add(Note(body="after"))
    assert await _notes(db) == ["after", "same"]


async def test_run_in_transaction_returns_and_runs_hooks_once(db: Database) -> None:
    """run_in_transaction returns fn's result and runs its commit hook exactly once."""
    calls: list[int] = []

    async def work(tx: Transaction) -> int:
        tx.session.add(Note(body="from fn"))
        tx.after_commit(lambda: calls.append(1))
        return 42

    assert await db.run_in_transaction(work) == 42
    assert calls == [1]


async def test_run_in_transaction_refuses_to_nest(db: Database) -> None:
    """Retrying inside an open transaction could not undo the outer work, so it is refused."""

    async def work(tx: Transaction) -> None:
        return None

    async with db.transaction():
        with pytest.raises(RuntimeError, match="inside an open transaction"):
            await db.run_in_transaction(work)


async def test_serializable_conflict_is_retried_on_postgres(pg: Database) -> None:
    """Two conflicting SERIALIZABLE transactions: one retries; count right, hooks once."""
    both_read = asyncio.Barrier(2)
    attempts: list[str] = []
    hooks: list[str] = []

    def increment(name: str) -> Any:
        async def work(tx: Transaction) -> None:
            attempts.append(name)
            value = await tx.session.scalar(select(Counter.value).where(Counter.id == 1))
            if attempts.count(name) == 1:
                await both_read.wait()
            await tx.session.execute(
                text("UPDATE counters SET value = :v WHERE id = 1"), {"v": (value or 0) + 1}
            )
            tx.after_commit(lambda: hooks.append(name))

        return work

    policy = Retry(attempts=5, initial_wait_seconds=0.001)
    await asyncio.gather(
        pg.run_in_transaction(increment("a"), retry=policy, isolation="SERIALIZABLE"),
        pg.run_in_transaction(increment("b"), retry=policy, isolation="SERIALIZABLE"),
    )
    async with pg.transaction(read_only=True) as tx:
        assert await tx.session.scalar(select(Counter.value)) == 2
    assert len(attempts) == 3
    assert sorted(hooks) == ["a", "b"]
    text_metrics = pg._metrics.render().decode()
    assert 'corestone_db_transaction_retries_total{cause="serialization"} 1.0' in text_metrics


async def test_exhausted_retries_raise_conflict(pg: Database) -> None:
    """When every attempt conflicts, the caller gets a ConflictError and no commit hook runs."""
    hooks: list[str] = []
    rolled_back: list[str] = []

    async def always_conflicts(tx: Transaction) -> None:
        tx.after_commit(lambda: hooks.append("commit"))
        tx.after_rollback(lambda: rolled_back.append("rollback"))
        await tx.session.execute(
            text("DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '40001'; END $$")
        )

    with pytest.raises(ConflictError):
        await pg.run_in_transaction(
            always_conflicts, retry=Retry(attempts=3, initial_wait_seconds=0)
        )
    assert hooks == []
    assert rolled_back == ["rollback"]


async def test_dropped_connection_before_commit_is_retried(pg: Database) -> None:
    """A connection killed mid-transaction (before COMMIT) is retried on a new connection."""
    attempts = 0

    async def work(tx: Transaction) -> int:
        nonlocal attempts
        attempts += 1
        tx.session.add(Note(body=f"attempt {attempts}"))
        await tx.session.flush()
        if attempts == 1:
            pid = await tx.session.scalar(text("SELECT pg_backend_pid()"))
            async with pg.engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await tx.session.execute(text("SELECT 1"))
        return attempts

    assert await pg.run_in_transaction(work, retry=Retry(initial_wait_seconds=0.001)) == 2
    assert await _notes(pg) == ["attempt 2"]


async def test_sqlite_locked_database_is_retried(lite: Database, sqlite_url: str) -> None:
    """SQLite 'database is locked' (a writer holding the lock past busy_timeout) is retried."""
    path = sqlite_url.split("///", 1)[1]
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:

        async def work(tx: Transaction) -> str:
            tx.session.add(Note(body="after the lock"))
            return "done"

        policy = Retry(attempts=50, initial_wait_seconds=0.02, max_wait_seconds=0.05)
        assert await lite.run_in_transaction(work, retry=policy) == "done"
    finally:
        release.join()
        holder.close()
    assert await _notes(lite) == ["after the lock"]
    assert 'cause="locked"' in lite._metrics.render().decode()


async def test_failed_commit_is_not_retried(db: Database) -> None:
    """A failure at COMMIT (a deferred constraint) is raised, never retried."""
    async with db.engine.begin() as conn:
        deferrable = "DEFERRABLE INITIALLY DEFERRED"
        await conn.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        await conn.execute(
            text(
                "CREATE TABLE child (id INTEGER PRIMARY KEY,"
                f" parent_id INTEGER REFERENCES parent(id) {deferrable})"
            )
        )
    attempts = 0

    async def orphan(tx: Transaction) -> None:
        nonlocal attempts
        attempts += 1
        await tx.session.execute(text("INSERT INTO child (id, parent_id) VALUES (1, 99)"))

    with pytest.raises(ConflictError):
        await db.run_in_transaction(orphan)
    assert attempts == 1


async def test_isolation_and_read_only_reach_postgres(pg: Database) -> None:
    """isolation= sets the level; with it, read_only= makes PostgreSQL refuse writes."""
    async with pg.transaction(isolation="REPEATABLE READ") as tx:
        assert await tx.session.scalar(text("SHOW transaction_isolation")) == "repeatable read"
    async with pg.transaction(read_only=True, isolation="READ COMMITTED") as tx:
        assert await tx.session.scalar(text("SHOW transaction_read_only")) == "on"
    async with pg.transaction() as tx:
        assert await tx.session.scalar(text("SHOW transaction_read_only")) == "off"
        assert await tx.session.scalar(text("SHOW transaction_isolation")) == "read committed"


async def test_outcome_metrics(db: Database) -> None:
    """Commits and rollbacks are counted by outcome."""
    async with db.transaction():
        pass
    with pytest.raises(KeyError):
        async with db.transaction():
            raise KeyError("x")
    rendered = db._metrics.render().decode()
    assert 'corestone_db_transactions_total{outcome="rollback",target="primary"} 1.0' in rendered


async def test_cancelled_attempt_rolls_back_runs_hooks_once_and_frees_its_connection(
    db: Database,
) -> None:
    """Cancelling run_in_transaction mid-work rolls back, runs rollback hooks once, no commit
    hook, no retry, and gives the connection back to the pool."""
    hooks: list[str] = []
    started = asyncio.Event()

    async def work(tx: Transaction) -> None:
        tx.session.add(Note(body="cancelled"))
        await tx.session.flush()
        tx.after_commit(lambda: hooks.append("commit"))
        tx.after_rollback(lambda: hooks.append("rollback"))
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(db.run_in_transaction(work))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hooks == ["rollback"]
    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert await _notes(db) == []
