"""Hostile review of the read path and the pool (issue 11 items 2-3), both databases.

A read-only transaction must refuse writes by every path corestone offers (Core on the
session's connection, a data-modifying CTE, a repository's bulk insert), and a caller
that finds the pool exhausted must get the 503 error, whichever session API it used.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import MetaData, String, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone import UnavailableError
from corestone.cache import TieredCache
from corestone.db import (
    Database,
    PoolOptions,
    ReadOnlyTransactionError,
    Repository,
    Transaction,
)
from corestone.observability import Metrics
from corestone.web import AccessCache, Grant
from tests.integration.fault_proxy import FaultProxy

pytestmark = pytest.mark.timeout(60)


class _Base(DeclarativeBase):
    metadata = MetaData()


class Note(_Base):
    __tablename__ = "read_path_review_notes"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(50))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(
        database_url, pool=PoolOptions(size=1, timeout_seconds=0.2), metrics=Metrics()
    )
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    yield database
    await database.aclose()


class Notes(Repository[Note]):
    model = Note


async def _names(db: Database) -> list[str]:
    async with db.transaction() as tx:
        return list((await tx.session.scalars(select(Note.name))).all())


async def test_read_only_refuses_core_dml_on_the_sessions_connection(db: Database) -> None:
    """An INSERT executed on a read-only session's connection raises and writes nothing."""
    with pytest.raises(ReadOnlyTransactionError):
        async with db.transaction(read_only=True) as tx:
            connection = await tx.session.connection()
            await connection.execute(insert(Note).values(name="core"))
    assert await _names(db) == []


async def test_read_only_refuses_a_data_modifying_cte(db: Database) -> None:
    """A SELECT over an INSERT … RETURNING CTE in a read-only transaction writes nothing."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite has no data-modifying CTE")
    written = insert(Note).values(name="cte").returning(Note.id).cte("written")
    with pytest.raises(ReadOnlyTransactionError):
        async with db.transaction(read_only=True) as tx:
            await tx.session.execute(select(written.c.id))
    assert await _names(db) == []


async def test_read_only_refuses_plain_sql_writes(db: Database) -> None:
    """A text() INSERT in a read-only transaction raises and writes nothing."""
    with pytest.raises(ReadOnlyTransactionError):
        async with db.transaction(read_only=True) as tx:
            await tx.session.execute(
                text("  insert INTO read_path_review_notes (name) VALUES ('text')")
            )
    assert await _names(db) == []


async def test_read_only_still_runs_plain_sql_reads(db: Database) -> None:
    """text() reads, CTEs included, still run in a read-only transaction."""
    async with db.transaction(read_only=True) as tx:
        found = await tx.session.scalar(text("WITH one AS (SELECT 1 AS n) SELECT n FROM one"))
    assert found == 1


async def test_read_only_refuses_a_repository_bulk_insert(db: Database) -> None:
    """A repository's create_many (COPY on PostgreSQL) in a read-only transaction writes nothing."""
    with pytest.raises(ReadOnlyTransactionError):
        async with db.transaction(read_only=True) as tx:
            await Notes(tx).create_many([{"name": "bulk"}, {"name": "more"}])
    assert await _names(db) == []


async def test_read_only_refuses_a_repository_bulk_upsert(db: Database) -> None:
    """A repository's upsert_many (COPY into a temporary table on PostgreSQL) in a read-only
    transaction writes nothing."""
    with pytest.raises(ReadOnlyTransactionError):
        async with db.transaction(read_only=True) as tx:
            await Notes(tx).upsert_many([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], on=["id"])
    assert await _names(db) == []


async def _load_principal(session: object, digest: str) -> Grant | None:
    return Grant({"id": 1}, 1)


async def _load_membership(session: object, workspace: int, principal: int | str) -> Grant | None:
    return Grant("owner", principal)


async def test_an_exhausted_pool_is_unavailable_to_a_lookup(db: Database) -> None:
    """A principal lookup that finds the pool exhausted by others raises UnavailableError (503)."""
    access = AccessCache(db, load_principal=_load_principal, load_membership=_load_membership)
    held, done = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with db.transaction() as tx:
            await tx.session.execute(select(1))  # holds the only connection
            held.set()
            await done.wait()

    holder = asyncio.create_task(hold())
    await held.wait()
    try:
        with pytest.raises(UnavailableError):
            await access.authenticate("anything")
    finally:
        done.set()
        await holder


async def test_an_exhausted_pool_is_unavailable_to_a_bare_session(db: Database) -> None:
    """A statement on db.session() that finds the pool exhausted raises UnavailableError."""
    async with db.transaction() as tx:
        await tx.session.execute(select(1))
        with pytest.raises(UnavailableError):
            async with db.session() as session:
                await session.execute(select(1))


class CachedNotes(Repository[Note]):
    model = Note
    cache_reads = True


async def test_a_cached_read_on_an_unreachable_database_is_unavailable(postgres_url: str) -> None:
    """A cache miss on a lazy session whose database refuses connections is a 503, not a 500."""
    url = make_url(postgres_url)
    proxy = FaultProxy(url.port or 5432, url.host or "127.0.0.1")
    port = await proxy.start()
    url = url.set(host="127.0.0.1", port=port)
    database = Database(
        url.render_as_string(hide_password=False), cache=TieredCache(), metrics=Metrics()
    )
    await database.start()
    try:
        await proxy.shut()
        for _ in range(2):  # the reset connection first, then a refused connect
            with pytest.raises(UnavailableError):
                async with database.session() as session:
                    await CachedNotes(Transaction(session, database)).find(1)
    finally:
        await database.aclose()
