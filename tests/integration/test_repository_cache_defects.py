"""Cached repository reads on SQLite and PostgreSQL with real Redis: issue 10's defects 1-3, 6, 10.

A load that callers share owns its own session; a transaction that wrote (however it
wrote) and one that keeps a snapshot read around the cache; two models with one class
name never share entries; a cache needs a transaction to invalidate after.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import String, event, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import await_only

from corestone.cache import CacheOptions, TieredCache
from corestone.db import Database, IdMixin, Repository
from corestone.errors import LoadTimeoutError
from tests.integration.repo_models import Item, ItemRepository, database_for, workspace


class CachedItems(ItemRepository):
    cache_reads = True


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        yield database


@contextmanager
def cache_on(redis_url: str, **options: Any) -> Iterator[TieredCache]:
    """A Redis-backed cache in a namespace of its own (started by the caller)."""
    yield TieredCache.from_url(
        redis_url, namespace=f"repo-{uuid.uuid4().hex[:12]}", options=CacheOptions(**options)
    )


async def _create(db: Database, ws: int = 1, **values: Any) -> int:
    with workspace(ws):
        async with db.transaction() as tx:
            item = await ItemRepository(tx).create({"title": "t", **values})
            return int(item.id)


class Gate:
    """Holds every SELECT of the items table until released.

    PostgreSQL: another connection locks the table, so the SELECT waits on the server
    with the query in progress on its connection. SQLite (readers never wait): inside
    the driver call, before the statement is sent.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.release = asyncio.Event()
        self.armed = True
        self._entered = asyncio.Event()
        self._locker: Any = None
        if db.dialect == "sqlite":
            event.listen(db.engine.sync_engine, "before_cursor_execute", self._hold)

    def _hold(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.armed and statement.lstrip().upper().startswith("SELECT") and "items" in statement:
            self._entered.set()
            await_only(self.release.wait())

    async def close(self) -> None:
        if self.db.dialect == "postgresql":
            self._locker = await self.db.engine.connect()
            await self._locker.begin()
            await self._locker.execute(text("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))

    async def entered(self) -> None:
        """Wait until a SELECT is held."""
        if self.db.dialect == "sqlite":
            await self._entered.wait()
            return
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'SELECT%items%' AND datname = current_database()"
        )
        async with self.db.engine.connect() as probe:
            while not (await probe.execute(waiting)).scalar():
                await probe.rollback()  # the activity view is read once per transaction
                await asyncio.sleep(0.005)

    async def open(self) -> None:
        self.armed = False
        self.release.set()
        if self._locker is not None:
            await self._locker.rollback()
            await self._locker.close()


async def _read(db: Database, cache: TieredCache, item_id: int) -> str:
    with workspace(1):
        async with db.transaction(read_only=True) as tx:
            return (await CachedItems(tx, cache=cache).get(item_id)).title


async def _pool_still_works(db: Database, item_id: int) -> None:
    for _ in range(40):
        with workspace(1):
            async with db.transaction() as tx:
                items = ItemRepository(tx)
                assert (await items.get(item_id)).title == "t"
                assert await items.count() >= 1
    pool = db.engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedout() == 0  # no connection left behind in a forgotten transaction


async def test_cancelling_the_first_caller_of_a_shared_load_breaks_nothing(
    db: Database, redis_url: str
) -> None:
    """Cancelling the caller whose read started a shared load leaves the load and the pool whole."""
    item_id = await _create(db)
    gate = Gate(db)
    await gate.close()
    with cache_on(redis_url) as cache:
        async with cache:
            first = asyncio.create_task(_read(db, cache, item_id))
            await gate.entered()
            others = [asyncio.create_task(_read(db, cache, item_id)) for _ in range(3)]
            await asyncio.sleep(0)  # let them join the load
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            await gate.open()
            assert await asyncio.gather(*others) == ["t", "t", "t"]
            await _pool_still_works(db, item_id)


async def test_a_hard_timeout_shorter_than_the_load_breaks_nothing(
    db: Database, redis_url: str
) -> None:
    """A caller that gives up on a slow shared load leaves it to finish on its own session."""
    item_id = await _create(db)
    gate = Gate(db)
    await gate.close()
    with cache_on(redis_url, hard_timeout=0.05, fail_safe=False) as cache:
        async with cache:
            with pytest.raises(LoadTimeoutError):
                await _read(db, cache, item_id)
            await gate.entered()
            await gate.open()
            await _pool_still_works(db, item_id)
            assert await _read(db, cache, item_id) == "t"


async def test_an_autoflushed_orm_change_counts_as_a_write(db: Database, redis_url: str) -> None:
    """A transaction that changed an object and autoflushed reads its own row, never caching it."""
    item_id = await _create(db)
    with cache_on(redis_url) as cache:
        async with cache:
            with workspace(1), pytest.raises(RuntimeError):
                async with db.transaction() as tx:
                    obj = await tx.session.get(Item, item_id)
                    assert obj is not None
                    obj.title = "uncommitted"
                    await tx.session.execute(select(Item.id))  # autoflush
                    assert not tx.session.dirty
                    got = await CachedItems(tx, cache=cache).get(item_id)
                    assert got.title == "uncommitted"  # its own write
                    raise RuntimeError("roll back")
            assert await _read(db, cache, item_id) == "t"


async def test_core_dml_through_the_session_counts_as_a_write(db: Database, redis_url: str) -> None:
    """An UPDATE run through the session makes the transaction read around the cache."""
    item_id = await _create(db)
    with cache_on(redis_url) as cache:
        async with cache:
            assert await _read(db, cache, item_id) == "t"  # cached
            with workspace(1), pytest.raises(RuntimeError):
                async with db.transaction() as tx:
                    items = CachedItems(tx, cache=cache)
                    stmt = update(Item).where(Item.id == item_id).values(title="mine")
                    await tx.session.execute(stmt)
                    assert (await items.get(item_id)).title == "mine"
                    raise RuntimeError("roll back")
            assert await _read(db, cache, item_id) == "t"


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
async def test_a_snapshot_read_is_never_cached_when_the_backplane_is_late(
    postgres_url: str, redis_url: str, isolation: Any
) -> None:
    """A read from a snapshot older than another instance's commit is not stored in the cache."""
    namespace = f"repo-{uuid.uuid4().hex[:12]}"
    async for db_a in database_for(postgres_url):
        db_b = Database(postgres_url)
        await db_b.start()
        # A never hears B's backplane (its subscriber is not started): a message that is late.
        cache_a = TieredCache.from_url(redis_url, namespace=namespace)
        try:
            async with TieredCache.from_url(redis_url, namespace=namespace) as cache_b:
                item_id = await _create(db_a, title="old")
                with workspace(1):
                    async with db_a.transaction(read_only=True, isolation=isolation) as tx:
                        items = CachedItems(tx, cache=cache_a)
                        assert await items.count() == 1  # the snapshot begins here
                        async with db_b.transaction() as tx_b:
                            await CachedItems(tx_b, cache=cache_b).update(item_id, {"title": "new"})
                        assert (await items.get(item_id)).title == "old"  # its snapshot
                    for database, cache in ((db_a, cache_a), (db_b, cache_b)):
                        async with database.transaction(read_only=True) as tx:
                            got = await CachedItems(tx, cache=cache).get(item_id)
                            assert got.title == "new"
        finally:
            await cache_a.aclose()
            await db_b.aclose()


class _BaseA(DeclarativeBase):
    pass


class _BaseB(DeclarativeBase):
    pass


def _twin(base: type[DeclarativeBase], table: str) -> type[Any]:
    """A model class named ``Gadget`` on ``table``: two of them share a class name."""
    return type(
        "Gadget",
        (IdMixin, base),
        {
            "__tablename__": table,
            "__module__": f"{__name__}.{table}",
            "__annotations__": {"name": Mapped[str]},
            "name": mapped_column(String(50)),
        },
    )


GadgetA = _twin(_BaseA, "gadgets_a")
GadgetB = _twin(_BaseB, "gadgets_b")


class GadgetsA(Repository[Any]):
    model = GadgetA
    cache_reads = True


class GadgetsB(Repository[Any]):
    model = GadgetB
    cache_reads = True


async def test_two_models_with_one_class_name_never_share_cached_rows(
    db: Database, redis_url: str
) -> None:
    """Models named alike on different tables have their own cache entries and tags."""
    async with db.engine.begin() as conn:
        await conn.run_sync(_BaseA.metadata.create_all)
        await conn.run_sync(_BaseB.metadata.create_all)
    with cache_on(redis_url) as cache:
        async with cache:
            async with db.transaction() as tx:
                a = await GadgetsA(tx, cache=cache).create({"name": "from a"})
                b = await GadgetsB(tx, cache=cache).create({"name": "from b"})
            assert a.id == b.id
            for _ in range(2):
                async with db.transaction(read_only=True) as tx:
                    assert (await GadgetsA(tx, cache=cache).get(a.id)).name == "from a"
                    assert (await GadgetsB(tx, cache=cache).get(b.id)).name == "from b"
            async with db.transaction() as tx:
                await GadgetsB(tx, cache=cache).update(b.id, {"name": "b again"})
            async with db.transaction(read_only=True) as tx:
                assert (await GadgetsB(tx, cache=cache).get(b.id)).name == "b again"
                assert (await GadgetsA(tx, cache=cache).get(a.id)).name == "from a"


async def test_a_cache_with_a_bare_session_is_refused(db: Database, redis_url: str) -> None:
    """A repository on a bare session refuses a cache: it could never invalidate after commit."""
    with cache_on(redis_url) as cache:
        async with db.session() as session:
            assert isinstance(session, AsyncSession)
            with pytest.raises(TypeError, match="needs a Transaction"):
                CachedItems(session, cache=cache, workspace=1)
            assert CachedItems(session, workspace=1).cache is None
