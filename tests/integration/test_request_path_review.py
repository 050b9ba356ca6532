"""The request path's cached rows under a hostile review, on SQLite and PostgreSQL with Redis.

A row served from the cache joins the session as a loaded one would: a change to it is
audited against the cached values, versioned, and collides with nothing in the session.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import String, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, reconstructor

from corestone.cache import TieredCache
from corestone.db import Database, IdMixin, Repository, audit_entries, scope_session
from corestone.db.scoping import ScopableSession
from corestone.errors import ConflictError
from tests.integration.repo_models import Item, ItemRepository, database_for, workspace


class CachedItems(ItemRepository):
    cache_reads = True


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        yield database


def _cache(redis_url: str) -> TieredCache:
    return TieredCache.from_url(redis_url, namespace=f"rpath-{uuid.uuid4().hex[:12]}")


async def _create(db: Database) -> int:
    async with db.transaction() as tx:
        return int((await ItemRepository(tx).create({"title": "before", "rank": 1})).id)


async def test_a_change_to_a_cached_row_is_audited_against_its_cached_values(
    db: Database, redis_url: str
) -> None:
    """A repository update of a row the session got from the cache audits the right before."""
    with workspace(1):
        item_id = await _create(db)
    async with _cache(redis_url) as cache:
        with workspace(1):
            async with db.transaction(read_only=True) as tx:
                await CachedItems(tx, cache=cache).get(item_id)  # cached now
            async with db.transaction() as tx:
                items = CachedItems(tx, cache=cache)
                loads = cache.stats.loads
                obj = await items.get(item_id)
                assert cache.stats.loads == loads  # served from the cache
                assert inspect(obj).persistent
                assert not tx.session.dirty
                updated = await items.update(item_id, {"title": "after"})
                assert (updated.title, updated.version) == ("after", 2)
            async with db.transaction(read_only=True) as tx:
                row = (
                    await tx.session.execute(select(Item).where(Item.id == item_id))
                ).scalar_one()
                assert (row.title, row.version, row.rank) == ("after", 2, 1)
                log = await audit_entries(tx, workspace_id=1, limit=10)
    updates = [e for e in (entry.as_dict() for entry in log) if e["action"] == "update"]
    assert [entry["changes"] for entry in updates] == [
        {"title": {"before": "before", "after": "after"}}
    ]


async def test_a_repository_update_of_a_cached_row_checks_its_version(
    db: Database, redis_url: str
) -> None:
    """The version a cached row carries is the one the update checks against."""
    with workspace(1):
        item_id = await _create(db)
    async with _cache(redis_url) as cache:
        with workspace(1):
            async with db.transaction() as tx:
                items = CachedItems(tx, cache=cache)
                await items.get(item_id)
            async with db.transaction() as tx:
                items = CachedItems(tx, cache=cache)
                updated = await items.update(item_id, {"title": "x"}, expected_version=1)
                assert updated.version == 2
            with pytest.raises(ConflictError):
                async with db.transaction() as tx:
                    await CachedItems(tx, cache=cache).update(
                        item_id, {"title": "y"}, expected_version=1
                    )


async def test_a_cached_row_already_in_the_session_is_that_instance(
    db: Database, redis_url: str
) -> None:
    """A row the session holds (changed, not yet flushed) is returned, not replaced."""
    with workspace(1):
        item_id = await _create(db)
    async with _cache(redis_url) as cache:
        with workspace(1):
            async with db.transaction(read_only=True) as tx:
                await CachedItems(tx, cache=cache).get(item_id)
            async with db.transaction() as tx:
                held = await tx.session.get(Item, item_id)
                assert held is not None
                held.rank = 5
                again = await CachedItems(tx, cache=cache).get(item_id)
                assert again is held
                assert again.rank == 5


class _SheetBase(DeclarativeBase):
    pass


class Sheet(IdMixin, _SheetBase):
    __tablename__ = "review_sheets"
    title: Mapped[str] = mapped_column(String(50))

    @reconstructor
    def _on_load(self) -> None:
        self.rendered = f"<{self.title}>"


class CachedSheets(Repository[Sheet]):
    model = Sheet
    cache_reads = True


async def test_a_cached_row_runs_the_models_reconstructor(db: Database, redis_url: str) -> None:
    """A row from the cache is reconstructed as a queried one (and merge(), before) was."""
    async with db.engine.begin() as conn:
        await conn.run_sync(_SheetBase.metadata.create_all)
    async with db.transaction() as tx:
        sheet_id = int((await CachedSheets(tx).create({"title": "a"})).id)
    async with _cache(redis_url) as cache:
        for _ in range(2):  # the load, then a hit
            async with db.transaction(read_only=True) as tx:
                sheet = await CachedSheets(tx, cache=cache).get(sheet_id)
                assert sheet.rendered == "<a>"


async def test_scope_session_scopes_sessions_database_did_not_make(db: Database) -> None:
    """A user's own AsyncSession gets a listener of its own; a Database session only the flag.

    Database sessions share one class-level listener gated by scope_session's flag, so an
    unscoped one must stay unscoped and a plain one must still be scoped.
    """
    with workspace(1):
        mine = await _create(db)
    with workspace(2):
        theirs = await _create(db)
    both = select(Item.id).where(Item.id.in_([mine, theirs])).order_by(Item.id)
    with workspace(1):
        async with AsyncSession(db.engine) as plain:
            assert not isinstance(plain.sync_session, ScopableSession)
            scope_session(plain)
            scope_session(plain)  # idempotent: one listener
            assert list(await plain.scalars(both)) == [mine]
        async with db.transaction(read_only=True) as tx:
            assert isinstance(tx.session.sync_session, ScopableSession)
            assert list(await tx.session.scalars(both)) == [mine, theirs]  # not switched on
            scope_session(tx.session)
            assert list(await tx.session.scalars(both)) == [mine]
