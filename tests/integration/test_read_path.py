"""The read path (issue 11 item 2): read-only transactions that don't pay for writes.

On PostgreSQL a read-only transaction runs its statements in autocommit (no BEGIN, no
COMMIT); on SQLite it begins deferred, so readers never queue behind a writer. Writes
keep their transaction, and a read-only session refuses to write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import MetaData, String, insert, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone.db import Database, PoolOptions, ReadOnlyTransactionError, Transaction
from corestone.observability import Metrics


class _Base(DeclarativeBase):
    metadata = MetaData()


class Item(_Base):
    __tablename__ = "read_path_items"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(50))


async def _open(url: str, pool: PoolOptions | None = None, busy_ms: int = 5000) -> Database:
    database = Database(
        url, pool=pool or PoolOptions(), sqlite_busy_timeout_ms=busy_ms, metrics=Metrics()
    )
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    return database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await _open(database_url, PoolOptions(size=1))
    yield database
    await database.aclose()


async def _in_block(tx: Transaction) -> bool:
    """Whether the server says the connection is inside a transaction block (asyncpg)."""
    await tx.session.execute(text("SELECT 1"))
    raw = await (await tx.session.connection()).get_raw_connection()
    return bool(raw.driver_connection.is_in_transaction())  # type: ignore[union-attr]


async def test_postgres_read_only_statements_run_outside_a_transaction_block(
    postgres_url: str,
) -> None:
    """On PostgreSQL a read-only transaction sends no BEGIN: each statement is its own."""
    database = await _open(postgres_url)
    try:
        async with database.transaction(read_only=True) as tx:
            assert await _in_block(tx) is False
        async with database.transaction() as tx:
            assert await _in_block(tx) is True
    finally:
        await database.aclose()


async def test_postgres_read_only_with_isolation_keeps_one_snapshot(postgres_url: str) -> None:
    """A read-only transaction that asks for REPEATABLE READ keeps a real transaction."""
    database = await _open(postgres_url)
    try:
        async with database.transaction(read_only=True, isolation="REPEATABLE READ") as tx:
            assert await _in_block(tx) is True
            level = await tx.session.scalar(text("SHOW transaction_isolation"))
            assert level == "repeatable read"
    finally:
        await database.aclose()


async def test_a_write_after_a_read_on_the_same_connection_is_transactional(db: Database) -> None:
    """The read path's autocommit is reset when the connection returns: a write rolls back."""
    async with db.transaction(read_only=True) as tx:  # pool of one: the same connection
        await tx.session.execute(select(Item))
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as tx:
            tx.session.add(Item(name="never"))
            await tx.session.flush()
            raise RuntimeError("boom")
    async with db.transaction(read_only=True) as tx:
        assert (await tx.session.scalars(select(Item))).all() == []


async def test_read_only_transaction_refuses_orm_writes(db: Database) -> None:
    """An ORM change in a read-only transaction raises instead of being autocommitted."""
    with pytest.raises(ReadOnlyTransactionError):
        async with db.transaction(read_only=True) as tx:
            tx.session.add(Item(name="sneaky"))
    async with db.transaction(read_only=True) as tx:
        assert (await tx.session.scalars(select(Item))).all() == []


async def test_read_only_transaction_refuses_dml_statements(db: Database) -> None:
    """An INSERT statement run through a read-only session raises and writes nothing."""
    with pytest.raises(ReadOnlyTransactionError):
        async with db.transaction(read_only=True) as tx:
            await tx.session.execute(insert(Item).values(name="sneaky"))
    async with db.transaction(read_only=True) as tx:
        assert (await tx.session.scalars(select(Item))).all() == []


async def test_a_block_nested_in_a_read_only_transaction_shares_it(db: Database) -> None:
    """A nested read-only block reads (no SAVEPOINT) and its hooks run after the outer one."""
    async with db.transaction() as tx:
        tx.session.add(Item(name="a"))
    ran: list[str] = []
    async with db.transaction(read_only=True) as outer:
        async with db.transaction(read_only=True) as inner:
            assert inner.nested
            inner.after_commit(lambda: ran.append("inner"))
            names = (await inner.session.scalars(select(Item.name))).all()
        assert ran == []
        outer.after_commit(lambda: ran.append("outer"))
    assert names == ["a"]
    assert ran == ["inner", "outer"]


async def test_sqlite_readers_never_wait_for_the_write_lock(tmp_path: object) -> None:
    """16 readers finish while one writer holds its transaction and a second waits for it."""
    url = f"sqlite+aiosqlite:///{tmp_path}/readers.db"
    # A long busy timeout: a reader queued behind the writer would hang, not fail fast.
    database = await _open(url, PoolOptions(size=20), busy_ms=60_000)
    try:
        async with database.transaction() as tx:
            tx.session.add(Item(name="seed"))
        holding, release = asyncio.Event(), asyncio.Event()

        async def first_writer() -> None:
            async with database.transaction() as tx:
                tx.session.add(Item(name="first"))
                await tx.session.flush()
                holding.set()
                await release.wait()

        async def second_writer() -> None:
            await holding.wait()
            async with database.transaction() as tx:
                tx.session.add(Item(name="second"))

        async def reader() -> list[str]:
            async with database.transaction(read_only=True) as tx:
                return list((await tx.session.scalars(select(Item.name))).all())

        writers = [asyncio.create_task(first_writer()), asyncio.create_task(second_writer())]
        await holding.wait()
        seen = await asyncio.gather(*(reader() for _ in range(16)))
        assert not release.is_set()  # the first writer still holds the lock
        assert seen == [["seed"]] * 16  # and none of them saw its uncommitted row
        release.set()
        await asyncio.gather(*writers)
        async with database.transaction(read_only=True) as tx:
            names = sorted((await tx.session.scalars(select(Item.name))).all())
        assert names == ["first", "second", "seed"]
    finally:
        release.set()
        await database.aclose()


async def test_a_cancelled_read_returns_its_connection_reset(db: Database) -> None:
    """A read cancelled while it holds the only connection gives it back, transactional."""
    holding = asyncio.Event()

    async def read_forever() -> None:
        async with db.transaction(read_only=True) as tx:
            await tx.session.execute(select(Item))
            holding.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(read_forever())
    await holding.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as tx:  # the same connection: a pool of one
            tx.session.add(Item(name="never"))
            await tx.session.flush()
            raise RuntimeError("boom")
    async with db.transaction(read_only=True) as tx:
        assert (await tx.session.scalars(select(Item))).all() == []
