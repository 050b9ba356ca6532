"""upsert_many by COPY into a temporary table: the same rules as the batched upsert."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, text

from corestone import ConflictError
from corestone.db import Database, audit_entries
from corestone.db.scoping import INCLUDE_DELETED_OPTION
from corestone.testing import QueryCounter
from tests.integration.repo_models import Item, ItemRepository, database_for, workspace


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        yield database


async def _items(db: Database, ws: int) -> dict[str, tuple[str, int]]:
    with workspace(ws):
        async with db.transaction() as tx:
            rows = await tx.session.scalars(select(Item).where(Item.workspace_id == ws))
            return {r.code: (r.title, r.version) for r in rows if r.code is not None}


async def test_upsert_many_statements_do_not_grow_with_rows(db: Database) -> None:
    """On PostgreSQL 2,500 audited rows take a fixed handful of statements, COPY aside."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite upserts in batched INSERT … ON CONFLICT statements")
    rows = [{"code": f"c{i}", "title": f"t{i}"} for i in range(2500)]
    with workspace(1), QueryCounter(db.engine) as counter:
        async with db.transaction() as tx:
            assert await ItemRepository(tx).upsert_many(rows) == 2500
    statements = [e for e in counter.events if e.startswith("sql:")]
    # temp table, lock-read of the existing rows, the upsert, the audit rows
    assert statements == ["sql:CREATE", "sql:SELECT", "sql:INSERT", "sql:INSERT"]
    assert len(await _items(db, 1)) == 2500


async def test_upsert_many_inserts_updates_and_audits(db: Database) -> None:
    """New keys are created, existing ones updated (version + 1), each logged as such."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            assert await items.upsert_many([{"code": "a", "title": "one"}]) == 1
            # twice in one transaction: each call has its own temporary table
            rows = [{"code": "a", "title": "two"}, {"code": "b", "title": "new"}]
            assert await items.upsert_many(rows) == 2
    assert await _items(db, 1) == {"a": ("two", 2), "b": ("new", 1)}
    with workspace(1):
        async with db.transaction() as tx:
            log = [e.as_dict() for e in await audit_entries(tx, workspace_id=1)]
    actions = sorted((e["action"], e["changes"]["title"]["after"]) for e in log)
    assert actions == [("create", "new"), ("create", "one"), ("update", "two")]
    update = next(e for e in log if e["action"] == "update")
    assert update["changes"] == {"title": {"before": "one", "after": "two"}}
    assert (update["actor_id"], update["correlation_id"]) == ("user-1", "req-1")


async def test_upsert_many_never_takes_another_workspaces_row(db: Database) -> None:
    """A key that belongs to another workspace raises ConflictError and changes nothing."""
    with workspace(1):
        async with db.transaction() as tx:
            item = await ItemRepository(tx).create({"code": "k", "title": "mine"})
    with workspace(2), pytest.raises(ConflictError):
        async with db.transaction() as tx:
            rows: list[dict[str, Any]] = [
                {"id": item.id + 1000, "code": "fresh", "title": "x"},
                {"id": item.id, "code": "k2", "title": "stolen"},
            ]
            await ItemRepository(tx).upsert_many(rows, on=("id",))
    assert await _items(db, 1) == {"k": ("mine", 1)}
    assert await _items(db, 2) == {}


async def test_upsert_many_never_revives_a_deleted_row(db: Database) -> None:
    """A key held by a soft-deleted row raises ConflictError; the row stays deleted."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            item = await items.create({"code": "gone", "title": "old"})
            await items.delete(item.id)
        with pytest.raises(ConflictError):
            async with db.transaction() as tx:
                await ItemRepository(tx).upsert_many([{"code": "gone", "title": "back"}])
        async with db.transaction() as tx:
            deleted = {INCLUDE_DELETED_OPTION: True}
            row = await tx.session.get(Item, item.id, execution_options=deleted)
            assert row is not None
            assert (row.title, row.deleted_at is not None) == ("old", True)


async def test_upsert_many_with_rows_of_different_fields(db: Database) -> None:
    """Rows that set different fields still upsert (PostgreSQL falls back to batches)."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            await items.upsert_many([{"code": "a", "title": "one", "rank": 3}])
            rows = [{"code": "a", "title": "two"}, {"code": "b", "title": "b", "rank": 7}]
            assert await items.upsert_many(rows) == 2
        async with db.transaction() as tx:
            found = await tx.session.scalars(select(Item).order_by(Item.code))
            assert [(i.code, i.title, i.rank) for i in found] == [("a", "two", 3), ("b", "b", 7)]


@pytest.mark.parametrize("many", [True, False], ids=["upsert_many", "upsert"])
async def test_a_key_created_concurrently_is_never_logged_as_a_second_create(
    db: Database, many: bool
) -> None:
    """An upsert that ends up updating a row another transaction just created never logs it
    as created: the row's history (create, then update with its before) stays whole."""
    first_wrote = asyncio.Event()
    first_may_commit = asyncio.Event()

    async def first() -> None:
        with workspace(1):
            async with db.transaction() as tx:
                await ItemRepository(tx).upsert_many([{"code": "k", "title": "A"}])
                first_wrote.set()
                await first_may_commit.wait()

    async def second() -> None:
        await first_wrote.wait()
        with workspace(1):
            async with db.transaction() as tx:
                items = ItemRepository(tx)
                row = {"code": "k", "title": "B"}
                waiting = asyncio.ensure_future(
                    items.upsert_many([row]) if many else items.upsert(row)
                )
                await _until_a_query_waits_on_a_lock(db)
                first_may_commit.set()
                await waiting

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: the second upsert cannot interleave")
    outcome = await asyncio.gather(first(), second(), return_exceptions=True)
    with workspace(1):
        async with db.transaction() as tx:
            log = [e.as_dict() for e in await audit_entries(tx, workspace_id=1)]
    creates = [e for e in log if e["action"] == "create"]
    assert len(creates) == 1
    _title, version = (await _items(db, 1))["k"]
    updates = [e for e in log if e["action"] == "update"]
    assert len(updates) == version - 1
    assert outcome[0] is None


async def _until_a_query_waits_on_a_lock(db: Database) -> None:
    """Return once a statement of this database is blocked on a lock (polls pg_stat_activity)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with db.engine.connect() as conn:
        while not await conn.scalar(query):  # noqa: ASYNC110 - another server's state, no event
            await asyncio.sleep(0.01)
