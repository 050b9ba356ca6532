"""Optimistic locking: concurrent writers never lose an update; conflicts are StaleVersion."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from corestone import InvalidInputError, NotFoundError, StaleVersionError
from corestone.db import Database, PoolOptions
from corestone.observability import Metrics
from tests.integration.repo_models import AuditEntry, ItemRepository, RepoBase, workspace

WRITERS = 32
INCREMENTS = 2
ROWS = 2


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(
        database_url,
        pool=PoolOptions(size=WRITERS, max_overflow=4, timeout_seconds=60),
        sqlite_busy_timeout_ms=30_000,
        metrics=Metrics(),
    )
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(RepoBase.metadata.create_all)
        await conn.run_sync(lambda sync: AuditEntry.__table__.create(sync, checkfirst=True))
    yield database
    await database.aclose()


async def test_stale_version_names_the_current_version(db: Database) -> None:
    """An update with an old version raises StaleVersionError carrying the current one."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            item = await items.create({"title": "v"})
            await items.update(item.id, {"rank": 1}, expected_version=1)
            with pytest.raises(StaleVersionError) as caught:
                await items.update(item.id, {"rank": 2}, expected_version=1)
            assert caught.value.current_version == 2
            with pytest.raises(StaleVersionError):
                await items.delete(item.id, expected_version=1)
            await items.delete(item.id, expected_version=2)


async def test_concurrent_writers_lose_no_update(db: Database) -> None:
    """32 writers read-then-write the same rows: every increment lands, conflicts are stale."""
    with workspace(1):
        async with db.transaction() as tx:
            ids = await ItemRepository(tx).create_many(
                [{"title": f"row{i}", "rank": 0} for i in range(ROWS)]
            )
    conflicts = 0
    gate = asyncio.Event()

    async def writer(number: int) -> int:
        nonlocal conflicts
        target = ids[number % ROWS]
        done = 0
        await gate.wait()
        with workspace(1, actor=f"writer-{number}"):
            for _attempt in range(500):
                if done == INCREMENTS:
                    return done
                # Read in one transaction and write in another, as an HTTP client with
                # If-Match does: the window in between is where lost updates happen.
                async with db.transaction(read_only=True) as tx:
                    current = await ItemRepository(tx).get(target)
                    rank, version = current.rank, current.version
                await asyncio.sleep(0)
                try:
                    async with db.transaction() as tx:
                        await ItemRepository(tx).update(
                            target, {"rank": rank + 1}, expected_version=version
                        )
                except StaleVersionError:
                    conflicts += 1
                    continue
                done += 1
        raise AssertionError(f"writer {number} starved")

    tasks = [asyncio.create_task(writer(n)) for n in range(WRITERS)]
    gate.set()
    results = await asyncio.gather(*tasks)
    assert sum(results) == WRITERS * INCREMENTS
    with workspace(1):
        async with db.transaction() as tx:
            rows = await ItemRepository(tx).get_many(ids)
            updates = await tx.session.scalar(
                select(func.count()).where(AuditEntry.action == "update")
            )
    assert sum(r.rank for r in rows) == WRITERS * INCREMENTS
    assert all(r.version == r.rank + 1 for r in rows)
    assert updates == WRITERS * INCREMENTS  # one audit row per update that landed
    assert conflicts > 0


async def test_restore_and_delete_check_the_expected_version(db: Database) -> None:
    """restore(expected_version=) raises StaleVersionError with the current version, deleted
    or live, and changes nothing; with the current version it restores (a live row is
    returned as is); a version that is not an integer is refused before any statement."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            item = await items.create({"title": "v"})
            await items.delete(item.id, expected_version=1)  # now deleted, at version 2
            with pytest.raises(StaleVersionError) as caught:
                await items.restore(item.id, expected_version=1)
            assert caught.value.current_version == 2
            with pytest.raises(NotFoundError):
                await items.get(item.id)
            assert (await items.restore(item.id, expected_version=2)).version == 3
            with pytest.raises(StaleVersionError) as live:
                await items.restore(item.id, expected_version=2)
            assert live.value.current_version == 3
            assert (await items.restore(item.id, expected_version=3)).version == 3
            with pytest.raises(NotFoundError):
                await items.restore(item.id + 1000, expected_version=1)
            for call in (items.delete, items.restore):
                with pytest.raises(InvalidInputError):
                    await call(item.id, expected_version="3")  # type: ignore[operator]
            assert (await items.get(item.id)).version == 3
