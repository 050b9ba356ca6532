"""The connection pool (issue 11 item 3): steady, no ping per checkout, and it recovers.

Connections are opened once and reused (no overflow churn); a connection is pinged only
after it sat idle past ``ping_idle_seconds``; and when every backend is terminated mid-load
(``pg_terminate_backend``, the fault a server restart causes), requests recover without
losing a committed write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import MetaData, String, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corestone import CommitUnknownError, UnavailableError
from corestone.db import Database, PoolOptions, Transaction
from corestone.observability import Metrics
from corestone.testing import ManualClock


class _Base(DeclarativeBase):
    metadata = MetaData()


class Entry(_Base):
    __tablename__ = "pool_entries"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(40), unique=True)


async def _open(url: str, pool: PoolOptions, clock: ManualClock | None = None) -> Database:
    metrics = Metrics()
    database = Database(url, pool=pool, metrics=metrics, clock=clock or ManualClock())
    _METRICS[database] = metrics
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    return database


_METRICS: dict[Database, Metrics] = {}


def _opened(database: Database) -> float:
    value = _METRICS[database].registry.get_sample_value(
        "corestone_db_connections_opened_total", {"pool": "primary"}
    )
    return value or 0.0


async def _terminate_backends(url: str) -> int:
    """Terminate every backend of ``url``'s database but the caller's; how many."""
    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, database="postgres"
    )
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            parsed.database,
        )
        return sum(1 for row in rows if row[0])
    finally:
        await conn.close()


async def _count(database: Database) -> int:
    async with database.transaction(read_only=True) as tx:
        return int(await tx.session.scalar(text("SELECT count(*) FROM pool_entries")) or 0)


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[tuple[Database, ManualClock]]:
    clock = ManualClock()
    database = await _open(postgres_url, PoolOptions(size=1, ping_idle_seconds=30), clock)
    yield database, clock
    await database.aclose()


async def test_steady_load_within_the_pool_opens_no_connection(database_url: str) -> None:
    """After warm-up, sequential and concurrent transactions (even beyond the pool) reuse it."""
    database = await _open(database_url, PoolOptions(size=4))
    try:
        barrier = asyncio.Barrier(4)

        async def hold() -> None:
            async with database.transaction(read_only=True) as tx:
                await tx.session.execute(select(Entry))
                await barrier.wait()  # all four connections checked out at once

        await asyncio.gather(*(hold() for _ in range(4)))
        warm = _opened(database)
        assert 1 <= warm <= 4

        async def work(key: str) -> None:
            async with database.transaction() as tx:
                tx.session.add(Entry(key=key))
            async with database.transaction(read_only=True) as tx:
                await tx.session.execute(select(Entry).where(Entry.key == key))

        for i in range(20):
            await work(f"seq-{i}")
        for round_ in range(5):  # eight at once on four connections: they wait, none opens
            await asyncio.gather(*(work(f"par-{round_}-{i}") for i in range(8)))
        assert _opened(database) == warm
        assert await _count(database) == 60
    finally:
        await database.aclose()


async def test_a_busy_connection_is_not_pinged_at_checkout(
    pg: tuple[Database, ManualClock], postgres_url: str
) -> None:
    """Within the idle threshold there is no ping: a dead connection fails its statement once."""
    database, _clock = pg
    await _count(database)
    assert await _terminate_backends(postgres_url) == 1
    with pytest.raises(UnavailableError):
        await _count(database)  # not pinged, so the dead connection was used
    assert await _count(database) == 0  # the pool replaced it


async def test_an_idle_connection_is_pinged_and_replaced(
    pg: tuple[Database, ManualClock], postgres_url: str
) -> None:
    """Past the idle threshold the checkout pings, finds it dead, and opens a fresh one."""
    database, clock = pg
    await _count(database)
    opened = _opened(database)
    assert await _terminate_backends(postgres_url) == 1
    clock.advance(31)
    assert await _count(database) == 0  # no error reaches the caller
    assert _opened(database) == opened + 1


async def test_backends_terminated_mid_load_lose_no_committed_write(postgres_url: str) -> None:
    """Killing every backend mid-load: writes retry, later requests succeed, nothing lost."""
    database = await _open(postgres_url, PoolOptions(size=6))
    committed: set[str] = set()
    failures: list[BaseException] = []
    halfway = asyncio.Event()

    async def write(key: str) -> None:
        async def insert(tx: Transaction) -> None:
            tx.session.add(Entry(key=key))

        await database.run_in_transaction(insert)
        committed.add(key)

    async def worker(n: int) -> None:
        for i in range(30):
            try:
                await write(f"w{n}-{i}")
                await _count(database)
            except (UnavailableError, CommitUnknownError) as error:
                failures.append(error)  # a read, or a commit whose answer was lost
            if len(committed) >= 40:
                halfway.set()

    try:
        load = asyncio.gather(*(worker(n) for n in range(6)))
        await halfway.wait()
        assert await _terminate_backends(postgres_url) >= 1
        await load
        # Recovered: every request of a new round succeeds.
        await asyncio.gather(*(write(f"after-{n}") for n in range(6)))
        await asyncio.gather(*(_count(database) for _ in range(6)))
        async with database.transaction(read_only=True) as tx:
            stored = set((await tx.session.scalars(select(Entry.key))).all())
        assert committed <= stored
        assert len(committed) >= 6 * 30 + 6 - len(failures)
    finally:
        await database.aclose()


async def test_an_idle_live_connection_is_pinged_and_kept(database_url: str) -> None:
    """On both databases the idle ping passes for a live connection, which is reused."""
    clock = ManualClock()
    database = await _open(database_url, PoolOptions(size=1, ping_idle_seconds=30), clock)
    try:
        await _count(database)
        opened = _opened(database)
        clock.advance(31)
        assert await _count(database) == 0
        assert _opened(database) == opened
    finally:
        await database.aclose()
