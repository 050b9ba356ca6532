"""Repositories with the cache, on SQLite and PostgreSQL: read-through by id, tags after commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from corestone.cache import TieredCache
from corestone.db import ALL_WORKSPACES, Database
from corestone.errors import NotFoundError
from tests.integration.repo_models import ItemRepository, database_for, workspace


class CachedItems(ItemRepository):
    cache_reads = True
    user_columns: ClassVar[tuple[str, ...]] = ("code",)


class Counting:
    """Counts the SELECTs of the items table: a cache hit must not make one."""

    def __init__(self, db: Database) -> None:
        self.selects = 0
        from sqlalchemy import event

        event.listen(db.engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "items" in statement:
            self.selects += 1


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with TieredCache(namespace="repo") as cache:
        async for database in database_for(database_url, cache=cache):
            yield database


async def _create(db: Database, ws: int, **values: Any) -> int:
    with workspace(ws):
        async with db.transaction() as tx:
            item = await CachedItems(tx).create({"title": "t", **values})
            return int(item.id)


async def test_a_read_by_id_is_served_from_the_cache(db: Database) -> None:
    """Three reads of one id make one SELECT, and the cached row keeps an aware datetime."""
    item_id = await _create(db, 1)
    counting = Counting(db)
    for _ in range(3):
        with workspace(1):
            async with db.transaction(read_only=True) as tx:
                item = await CachedItems(tx).get(item_id)
                assert item.title == "t"
                assert item.created_at.tzinfo is not None  # types survive the cache
    assert counting.selects == 1


async def test_a_committed_update_is_read_fresh_right_after(db: Database) -> None:
    """A cached row updated and committed is read back at once with its new title and version."""
    item_id = await _create(db, 1)
    with workspace(1):
        async with db.transaction(read_only=True) as tx:
            assert (await CachedItems(tx).get(item_id)).title == "t"
        async with db.transaction() as tx:
            await CachedItems(tx).update(item_id, {"title": "new"})
        async with db.transaction(read_only=True) as tx:
            got = await CachedItems(tx).get(item_id)
    assert (got.title, got.version) == ("new", 2)


async def test_a_rolled_back_write_is_never_cached_and_invalidates_nothing(db: Database) -> None:
    """A write seen in a rolled-back transaction is never cached and sends no invalidation."""
    item_id = await _create(db, 1)
    with workspace(1):
        async with db.transaction(read_only=True) as tx:
            await CachedItems(tx).get(item_id)  # cached: "t"
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                items = CachedItems(tx)
                await items.update(item_id, {"title": "uncommitted"})
                assert (await items.get(item_id)).title == "uncommitted"  # own write seen
                raise RuntimeError("roll back")
        async with db.transaction(read_only=True) as tx:
            assert (await CachedItems(tx).get(item_id)).title == "t"
    assert db.cache is not None
    assert db.cache.stats.invalidations_sent == 0


async def test_delete_and_restore_invalidate(db: Database) -> None:
    """A cached row is not found right after a soft delete, and is back right after a restore."""
    item_id = await _create(db, 1)
    with workspace(1):
        async with db.transaction() as tx:
            await CachedItems(tx).get(item_id)
        async with db.transaction() as tx:
            await CachedItems(tx).delete(item_id)
        async with db.transaction(read_only=True) as tx:
            with pytest.raises(NotFoundError):
                await CachedItems(tx).get(item_id)
        async with db.transaction() as tx:
            await CachedItems(tx).restore(item_id)
        async with db.transaction(read_only=True) as tx:
            assert (await CachedItems(tx).get(item_id)).deleted_at is None


async def test_an_absent_id_is_cached_as_absent_until_created(db: Database) -> None:
    """An id found absent (and cached so) is read as the new row once an upsert creates it."""
    with workspace(1):
        async with db.transaction(read_only=True) as tx:
            assert await CachedItems(tx).find(10_000) is None
        async with db.transaction() as tx:
            made = await CachedItems(tx).upsert({"id": 10_000, "title": "late", "code": "x"})
        async with db.transaction(read_only=True) as tx:
            assert (await CachedItems(tx).get(made.id)).title == "late"


async def test_bulk_writes_invalidate_the_whole_model_in_the_workspace(db: Database) -> None:
    """update_many by filter drops every cached row of the model in the workspace."""
    ids = [await _create(db, 1, rank=i) for i in range(3)]
    with workspace(1):
        async with db.transaction(read_only=True) as tx:
            assert [i.rank for i in await CachedItems(tx).get_many(ids)] == [0, 1, 2]
        async with db.transaction() as tx:
            assert await CachedItems(tx).update_many({"rank": {"ge": 0}}, {"status": "done"}) == 3
        async with db.transaction(read_only=True) as tx:
            assert {i.status for i in await CachedItems(tx).get_many(ids)} == {"done"}


async def test_another_workspace_never_sees_a_cached_row(db: Database) -> None:
    """A row cached in workspace 1 is absent from workspace 2; an all-workspaces read finds it."""
    item_id = await _create(db, 1)
    with workspace(1):
        async with db.transaction(read_only=True) as tx:
            await CachedItems(tx).get(item_id)
    with workspace(2):
        async with db.transaction(read_only=True) as tx:
            assert await CachedItems(tx).find(item_id) is None
    with workspace(None):
        async with db.transaction(read_only=True) as tx:
            everywhere = CachedItems(tx, workspace=ALL_WORKSPACES)
            assert (await everywhere.get(item_id)).id == item_id  # read from the database


async def test_writes_touch_workspace_user_and_entity_tags(db: Database) -> None:
    """Creating a row drops entries tagged with its workspace, the acting user and its user
    column value, and nothing in another workspace."""
    assert db.cache is not None
    cache = db.cache
    await cache.set("summary", "old", tags=["workspace:1"], workspace=1)
    await cache.set("mine", "old", tags=["user:user-1"], workspace=1)
    await cache.set("coded", "old", tags=["user:x9"], workspace=1)
    await cache.set("other-ws", "kept", tags=["workspace:2"], workspace=2)
    await _create(db, 1, code="x9")
    assert await cache.get_many(["summary", "mine", "coded"], workspace=1) == {}
    assert await cache.get("other-ws", workspace=2) == "kept"


async def test_a_bulk_write_across_workspaces_drops_their_cached_rows(db: Database) -> None:
    """An all-workspaces update_many drops the row cached in workspace 1: it reads the new title."""
    item_id = await _create(db, 1, title="old")
    with workspace(1):
        async with db.transaction(read_only=True) as tx:
            assert (await CachedItems(tx).get(item_id)).title == "old"
    with workspace(None):
        async with db.transaction() as tx:
            everywhere = CachedItems(tx, workspace=ALL_WORKSPACES)
            assert await everywhere.update_many({"title": "old"}, {"title": "new"}) == 1
    with workspace(1):
        async with db.transaction(read_only=True) as tx:
            assert (await CachedItems(tx).get(item_id)).title == "new"


async def test_get_many_reads_the_cached_rows_and_queries_the_rest_once(db: Database) -> None:
    """get_many serves cached rows from the cache, loads the misses in one SELECT, keeps the
    asked order, and skips absent ids."""
    ids = [await _create(db, 1, rank=i) for i in range(4)]
    with workspace(1):
        async with db.transaction(read_only=True) as tx:
            await CachedItems(tx).get(ids[0])
        counting = Counting(db)
        async with db.transaction(read_only=True) as tx:
            rows = await CachedItems(tx).get_many([ids[3], ids[0], 10_000, ids[1], ids[2]])
        assert [row.rank for row in rows] == [3, 0, 1, 2]
        assert counting.selects == 1  # the three misses in one query
        async with db.transaction(read_only=True) as tx:
            assert len(await CachedItems(tx).get_many(ids)) == 4
        # Rows get_many loads are returned, not stored (docs/repository.md): one query
        # again for the three, and the one cached row still comes from the cache.
        assert counting.selects == 2
