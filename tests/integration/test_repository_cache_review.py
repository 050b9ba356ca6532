"""Cached repository reads under a hostile review, on SQLite and PostgreSQL with real Redis.

A cache miss never waits for a pooled connection that only its callers could free; a
transaction sees its own writes however they were sent; an ORM change to a row commits
its invalidation like a repository write does.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Enum, String, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import QueuePool

from corestone.cache import CacheOptions, TieredCache
from corestone.db import AuditEntry, Database, IdMixin, PoolOptions, Repository
from corestone.errors import InvalidInputError, UnavailableError
from corestone.observability import Metrics
from tests.integration.repo_models import (
    KEY,
    Item,
    ItemRepository,
    RepoBase,
    database_for,
    open_database,
    workspace,
)
from tests.integration.test_repository_cache_defects import Gate


class CachedItems(ItemRepository):
    cache_reads = True


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        yield database


def _cache(redis_url: str, namespace: str | None = None, **options: Any) -> TieredCache:
    return TieredCache.from_url(
        redis_url,
        namespace=namespace or f"review-{uuid.uuid4().hex[:12]}",
        options=CacheOptions(**options),
    )


async def _create(db: Database, title: str = "t") -> int:
    with workspace(1):
        async with db.transaction() as tx:
            return int((await ItemRepository(tx).create({"title": title})).id)


async def _read(db: Database, cache: TieredCache, item_id: int) -> str:
    with workspace(1):
        async with db.transaction(read_only=True) as tx:
            return (await CachedItems(tx, cache=cache).get(item_id)).title


async def test_cache_misses_with_every_pooled_connection_held_by_their_callers(
    database_url: str, redis_url: str
) -> None:
    """Callers holding every pooled connection still get their rows when the cache misses."""
    db = Database(
        database_url,
        pool=PoolOptions(size=2, max_overflow=0, timeout_seconds=0.5),
        metrics=Metrics(),
    )
    await db.start()
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(RepoBase.metadata.create_all)
            await conn.run_sync(lambda sync: AuditEntry.__table__.create(sync, checkfirst=True))
        ids = [await _create(db, f"t{n}") for n in range(2)]
        holding = asyncio.Barrier(2)

        async def read(item_id: int, cache: TieredCache) -> str:
            with workspace(1):
                async with db.transaction(read_only=True) as tx:
                    await holding.wait()  # both callers now hold a connection each
                    return (await CachedItems(tx, cache=cache).get(item_id)).title

        async with _cache(redis_url, hard_timeout=None) as cache:
            got = await asyncio.gather(*(read(item_id, cache) for item_id in ids))
            assert got == ["t0", "t1"]
            assert await _read(db, cache, ids[0]) == "t0"  # and the pool is whole
    finally:
        await db.aclose()


async def _cache_then_write_and_read(
    db: Database, cache: TieredCache, item_id: int, write: Any
) -> str:
    """Cache the row, then in a transaction that rolls back: write, read it back."""
    assert await _read(db, cache, item_id) == "t"
    seen = ""
    with workspace(1), pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await write(tx)
            seen = (await CachedItems(tx, cache=cache).get(item_id)).title
            raise RuntimeError("roll back")
    assert await _read(db, cache, item_id) == "t"  # nothing uncommitted was cached
    return seen


async def test_orm_dml_before_the_repository_was_made_counts_as_a_write(
    db: Database, redis_url: str
) -> None:
    """An UPDATE run through the session before any repository existed is read back."""
    item_id = await _create(db)

    async def write(tx: Any) -> None:
        await tx.session.execute(update(Item).where(Item.id == item_id).values(title="mine"))

    async with _cache(redis_url) as cache:
        assert await _cache_then_write_and_read(db, cache, item_id, write) == "mine"


async def test_bulk_update_mappings_counts_as_a_write(db: Database, redis_url: str) -> None:
    """A transaction that wrote with ``bulk_update_mappings`` reads its own row, not the cache."""
    item_id = await _create(db)

    async def write(tx: Any) -> None:
        rows = [{"id": item_id, "title": "mine"}]
        await tx.session.run_sync(lambda sync: sync.bulk_update_mappings(Item, rows))

    async with _cache(redis_url) as cache:
        assert await _cache_then_write_and_read(db, cache, item_id, write) == "mine"


@pytest.mark.parametrize("how", ["core", "text", "driver"])
async def test_sql_on_the_sessions_connection_counts_as_a_write(
    db: Database, redis_url: str, how: str
) -> None:
    """A transaction that wrote on its session's connection reads its own row, not the cache."""
    item_id = await _create(db)
    table = Item.__table__

    async def write(tx: Any) -> None:
        connection = await tx.session.connection()
        if how == "core":
            await connection.execute(
                update(table).where(table.c.id == item_id).values(title="mine")
            )
        elif how == "text":
            await connection.execute(
                text("UPDATE items SET title = 'mine' WHERE id = :id"), {"id": item_id}
            )
        else:
            sql = f"UPDATE items SET title = 'mine' WHERE id = {item_id}"
            await connection.exec_driver_sql(sql)

    async with _cache(redis_url) as cache:
        assert await _cache_then_write_and_read(db, cache, item_id, write) == "mine"


async def test_a_read_only_transaction_that_only_read_still_uses_the_cache(
    db: Database, redis_url: str
) -> None:
    """Reads (and SQLAlchemy's own BEGIN and SAVEPOINT) do not count as writes."""
    item_id = await _create(db)
    async with _cache(redis_url) as cache:
        assert await _read(db, cache, item_id) == "t"
        with workspace(1):
            async with db.transaction() as tx:
                items = CachedItems(tx, cache=cache)
                await items.count()
                async with db.transaction():  # a SAVEPOINT
                    assert await items.exists()
                loads = cache.stats.loads
                assert (await items.get(item_id)).title == "t"
                assert cache.stats.loads == loads  # a hit: no load on the database


async def test_an_orm_change_to_a_cached_row_is_invalidated_on_commit(
    database_url: str, redis_url: str
) -> None:
    """Committing a change to an object a cached repository returned drops the cached row."""
    namespace = f"review-{uuid.uuid4().hex[:12]}"
    async for db in database_for(database_url):
        item_id = await _create(db)
        async with _cache(redis_url, namespace) as writer, _cache(redis_url, namespace) as other:
            assert await _read(db, other, item_id) == "t"  # in Redis now
            with workspace(1):
                async with db.transaction() as tx:
                    obj = await CachedItems(tx, cache=writer).get(item_id)
                    obj.title = "changed"  # flushed at commit by the unit of work
            assert await _read(db, writer, item_id) == "changed"
            async with _cache(redis_url, namespace) as fresh:  # an instance with an empty L1
                assert await _read(db, fresh, item_id) == "changed"


async def test_an_orm_change_in_a_rolled_back_transaction_leaves_the_cache(
    db: Database, redis_url: str
) -> None:
    """An ORM change that rolls back is never served from the cache."""
    item_id = await _create(db)
    async with _cache(redis_url) as cache:
        assert await _read(db, cache, item_id) == "t"
        with workspace(1), pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                obj = await CachedItems(tx, cache=cache).get(item_id)
                obj.title = "changed"
                await tx.session.flush()
                raise RuntimeError("roll back")
        assert await _read(db, cache, item_id) == "t"


async def test_a_row_the_orm_inserts_replaces_a_cached_absence(
    db: Database, redis_url: str
) -> None:
    """An id cached as absent is found once the ORM has inserted that row and committed."""
    item_id = await _create(db)
    async with _cache(redis_url) as cache:
        with workspace(1):
            async with db.transaction(read_only=True) as tx:
                assert await CachedItems(tx, cache=cache).find(item_id + 1) is None  # cached
            async with db.transaction() as tx:
                CachedItems(tx, cache=cache)
                tx.session.add(Item(workspace_id=1, title="added"))
            async with db.transaction(read_only=True) as tx:
                added = await CachedItems(tx, cache=cache).find(item_id + 1)
                assert added is not None
                assert added.title == "added"


async def test_closing_the_cache_during_a_load_leaves_the_pool_whole(
    db: Database, redis_url: str
) -> None:
    """A load cancelled by ``cache.aclose()`` mid-query closes its own session cleanly."""
    item_id = await _create(db)
    gate = Gate(db)
    await gate.close()
    cache = _cache(redis_url)
    async with cache:
        reader = asyncio.create_task(_read(db, cache, item_id))
        await gate.entered()
        await cache.aclose()
        with pytest.raises(UnavailableError):
            await reader
    await gate.open()
    for _ in range(20):
        with workspace(1):
            async with db.transaction() as tx:
                items = ItemRepository(tx)
                assert (await items.get(item_id)).title == "t"
                await items.update(item_id, {"rank": 1})
    pool = db.engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedout() == 0


class _DottedBase(DeclarativeBase):
    pass


class _SchemaBase(DeclarativeBase):
    pass


class DottedName(IdMixin, _DottedBase):
    """Table ``"billing.ledger"`` in the default schema."""

    __tablename__ = "billing.ledger"
    name: Mapped[str] = mapped_column(String(50))


class InBilling(IdMixin, _SchemaBase):
    """Table ``ledger`` in schema ``billing``: the same ``Table.fullname``."""

    __tablename__ = "ledger"
    __table_args__ = {"schema": "billing"}  # noqa: RUF012 - SQLAlchemy's declarative form
    name: Mapped[str] = mapped_column(String(50))


class DottedRepository(Repository[DottedName]):
    model = DottedName
    cache_reads = True
    sortable = ("name",)


class BillingRepository(Repository[InBilling]):
    model = InBilling
    cache_reads = True
    sortable = ("name",)


async def test_a_dotted_table_name_and_a_schema_never_share_cached_rows(
    postgres_url: str, redis_url: str
) -> None:
    """Table "billing.ledger" and table billing.ledger have their own cache entries."""
    db = Database(postgres_url, metrics=Metrics())
    await db.start()
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE SCHEMA billing"))
            await conn.run_sync(_DottedBase.metadata.create_all)
            await conn.run_sync(_SchemaBase.metadata.create_all)
        async with _cache(redis_url) as cache:
            async with db.transaction() as tx:
                dotted = await DottedRepository(tx, cache=cache).create({"name": "dotted"})
                billing = await BillingRepository(tx, cache=cache).create({"name": "schema"})
            assert dotted.id == billing.id
            for _ in range(2):
                async with db.transaction(read_only=True) as tx:
                    assert (await DottedRepository(tx, cache=cache).get(dotted.id)).name == "dotted"
                    assert (
                        await BillingRepository(tx, cache=cache).get(billing.id)
                    ).name == "schema"
    finally:
        await db.aclose()


async def test_a_cursor_of_one_model_is_refused_by_a_model_of_the_same_class_name(
    db: Database,
) -> None:
    """A keyset cursor is bound to its model's table, not only to the class name."""
    twins = {"a": _twin("cursor_twins_a"), "b": _twin("cursor_twins_b")}
    async with db.engine.begin() as conn:
        for model in twins.values():
            await conn.run_sync(model.__table__.create)
    repositories = {
        name: type(f"Twins{name}", (Repository,), {"model": model, "sortable": ("name",)})
        for name, model in twins.items()
    }
    async with db.transaction() as tx:
        for repository in repositories.values():
            await repository(tx).create_many([{"name": "x"}, {"name": "y"}])
        page = await repositories["a"](tx, signing_key=KEY).list(sort="name", limit=1)
        assert page.next_cursor is not None
        with pytest.raises(InvalidInputError):
            await repositories["b"](tx, signing_key=KEY).list(
                sort="name", limit=1, cursor=page.next_cursor
            )


def _twin(table: str) -> type[Any]:
    """A model class named ``Twin`` on ``table``, with a base of its own."""
    base = type("TwinBase", (DeclarativeBase,), {})
    return type(
        "Twin",
        (IdMixin, base),
        {
            "__tablename__": table,
            "__module__": f"{__name__}.{table}",
            "__annotations__": {"name": Mapped[str]},
            "name": mapped_column(String(50)),
        },
    )


class _RenamedBase(DeclarativeBase):
    pass


class Renamed(IdMixin, _RenamedBase):
    """Attributes whose columns are named otherwise, one of them nullable."""

    __tablename__ = "renamed"
    label: Mapped[str] = mapped_column("Display Name", String(50), unique=True)
    note: Mapped[str | None] = mapped_column('a "note"', String(50), nullable=True)


class RenamedRepository(Repository[Renamed]):
    model = Renamed
    upsert_keys = ("label",)


async def test_bulk_writes_keep_values_of_columns_named_unlike_their_attribute(
    db: Database,
) -> None:
    """create_many and upsert_many keep values of columns named unlike their attribute."""
    async with db.engine.begin() as conn:
        await conn.run_sync(_RenamedBase.metadata.create_all)
    async with db.transaction() as tx:
        renamed = RenamedRepository(tx)
        ids = await renamed.create_many([{"label": "a", "note": "first"}, {"label": "b"}])
        await renamed.upsert_many([{"label": "b", "note": "second"}, {"label": "c", "note": "x"}])
    async with db.transaction(read_only=True) as tx:
        found = await RenamedRepository(tx).get_many(ids)
        assert [(row.label, row.note) for row in found] == [("a", "first"), ("b", "second")]
        assert await RenamedRepository(tx).count() == 3


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class _PaintBase(DeclarativeBase):
    pass


class Paint(IdMixin, _PaintBase):
    __tablename__ = "paints"
    color: Mapped[Color] = mapped_column(Enum(Color))


class PaintRepository(Repository[Paint]):
    model = Paint


async def test_an_enum_column_takes_its_members(db: Database) -> None:
    """A Python enum column accepts its members and stored names; anything else is invalid."""
    async with db.engine.begin() as conn:
        await conn.run_sync(_PaintBase.metadata.create_all)
    async with db.transaction() as tx:
        paints = PaintRepository(tx)
        red = await paints.create({"color": Color.RED})
        blue = await paints.create({"color": "BLUE"})
        await paints.create_many([{"color": Color.BLUE}])
        with pytest.raises(InvalidInputError) as caught:
            await paints.create({"color": "green"})
        assert caught.value.field == "color"
    async with db.transaction(read_only=True) as tx:
        got = await PaintRepository(tx).get_many([red.id, blue.id])
        assert [paint.color for paint in got] == [Color.RED, Color.BLUE]


async def test_a_cached_read_first_thing_in_a_savepoint(db: Database, redis_url: str) -> None:
    """A cached read as a savepoint's first statement works (no I/O outside the driver's loop)."""
    item_id = await _create(db)
    async with _cache(redis_url) as cache:
        with workspace(1):
            async with db.transaction(), db.transaction() as savepoint:
                assert (await CachedItems(savepoint, cache=cache).get(item_id)).title == "t"
                assert [i.id for i in await CachedItems(savepoint, cache=cache).get_many([item_id])]


async def test_an_orm_change_after_a_rolled_back_savepoint_is_invalidated(
    db: Database, redis_url: str
) -> None:
    """A repository made in a savepoint that rolled back still gets later ORM changes dropped."""
    item_id = await _create(db)
    async with _cache(redis_url) as cache:
        assert await _read(db, cache, item_id) == "t"
        with workspace(1):
            async with db.transaction() as tx:
                with pytest.raises(RuntimeError):
                    async with db.transaction() as savepoint:
                        await CachedItems(savepoint, cache=cache).get(item_id)
                        raise RuntimeError("roll the savepoint back")
                obj = await ItemRepository(tx).get(item_id)
                obj.title = "changed"
        assert await _read(db, cache, item_id) == "changed"


async def test_a_row_the_orm_moves_to_another_workspace_leaves_the_old_ones_cache(
    db: Database, redis_url: str
) -> None:
    """A row whose workspace an ORM change moved is no longer served in the workspace it left."""
    item_id = await _create(db)
    async with _cache(redis_url) as cache:
        assert await _read(db, cache, item_id) == "t"  # cached in workspace 1
        with workspace(1):
            async with db.transaction() as tx:
                obj = await CachedItems(tx, cache=cache).get(item_id)
                obj.workspace_id = 2
            async with db.transaction(read_only=True) as tx:
                assert await CachedItems(tx, cache=cache).find(item_id) is None


async def test_cancelling_get_many_during_its_query_leaves_the_pool_whole(
    db: Database, redis_url: str
) -> None:
    """A caller cancelled while get_many queries its misses leaves no broken connection."""
    item_id = await _create(db)
    gate = Gate(db)
    async with _cache(redis_url) as cache:

        async def read_many() -> list[Any]:
            with workspace(1):
                async with db.transaction(read_only=True) as tx:
                    return await CachedItems(tx, cache=cache).get_many([item_id])

        await gate.close()
        reader = asyncio.create_task(read_many())
        await gate.entered()
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await gate.open()
        for _ in range(20):
            assert await _read(db, cache, item_id) == "t"
            with workspace(1):
                async with db.transaction() as tx:
                    await ItemRepository(tx).update(item_id, {"rank": 1})
    pool = db.engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedout() == 0


async def test_a_row_the_orm_deletes_is_no_longer_served(db: Database, redis_url: str) -> None:
    """A cached row deleted with ``session.delete`` and committed is gone from the cache."""
    item_id = await _create(db)
    async with _cache(redis_url) as cache:
        assert await _read(db, cache, item_id) == "t"
        with workspace(1):
            async with db.transaction() as tx:
                await tx.session.delete(await CachedItems(tx, cache=cache).get(item_id))
            async with db.transaction(read_only=True) as tx:
                assert await CachedItems(tx, cache=cache).find(item_id) is None


async def test_a_database_without_a_cache_records_nothing_about_its_flushes(
    database_url: str,
) -> None:
    """With no cache anywhere, flushed rows are not remembered for invalidation: no garbage
    per flushed object on the write path (the create_many figure of issue 10's benchmark)."""
    database = await open_database(database_url)
    try:
        with workspace(1):
            async with database.transaction() as tx:
                tx.session.add(Item(title="plain", workspace_id=1))
                await tx.session.flush()
                assert "corestone_flushed" not in tx.session.sync_session.info
    finally:
        await database.aclose()
