"""Tenant scoping by construction: no repository method reads or changes another workspace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from corestone import ConflictError, InvalidInputError, NotFoundError, WorkspaceRequiredError
from corestone.db import Database
from corestone.db.scoping import ALL_WORKSPACES
from tests.integration.repo_models import KEY, Item, ItemRepository, database_for, workspace

MINE, THEIRS = 1, 2


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        yield database


async def _seed(db: Database) -> tuple[list[int], list[int]]:
    """Three items in each workspace (one of theirs soft-deleted); returns (mine, theirs)."""
    ids = {}
    for ws in (MINE, THEIRS):
        with workspace(ws):
            async with db.transaction() as tx:
                items = ItemRepository(tx)
                ids[ws] = await items.create_many(
                    [{"title": f"ws{ws}-{i}", "code": f"c{i}", "rank": i} for i in range(3)]
                )
                if ws == THEIRS:
                    await items.delete(ids[ws][2])
    return ids[MINE], ids[THEIRS]


async def _snapshot(db: Database) -> list[tuple[Any, ...]]:
    async with db.transaction() as tx:
        rows = await tx.session.execute(
            select(Item.__table__).order_by(Item.__table__.c.id),
            execution_options={"corestone_workspace": ALL_WORKSPACES},
        )
        return [tuple(r) for r in rows]


async def test_no_workspace_in_context_is_refused(db: Database) -> None:
    """With no workspace bound, every method raises WorkspaceRequiredError and writes nothing."""
    await _seed(db)
    before = await _snapshot(db)
    calls = [
        lambda r: r.get(1),
        lambda r: r.find(1),
        lambda r: r.get_many([1]),
        lambda r: r.count(),
        lambda r: r.exists(),
        lambda r: r.list(),
        lambda r: r.page(),
        lambda r: r.create({"title": "x"}),
        lambda r: r.create_many([{"title": "x"}]),
        lambda r: r.update(1, {"rank": 9}),
        lambda r: r.update_many({}, {"rank": 9}),
        lambda r: r.upsert({"code": "c0", "title": "x"}),
        lambda r: r.upsert_many([{"code": "c0", "title": "x"}]),
        lambda r: r.delete(1),
        lambda r: r.restore(1),
        lambda r: r.purge(1),
    ]
    for call in calls:
        with pytest.raises(WorkspaceRequiredError):
            async with db.transaction() as tx:
                await call(ItemRepository(tx, signing_key=KEY))
    assert await _snapshot(db) == before


async def test_orm_queries_on_a_scoped_session_need_a_workspace(db: Database) -> None:
    """A plain ORM query on a session a repository scoped refuses without a workspace."""
    await _seed(db)
    with pytest.raises(WorkspaceRequiredError):
        async with db.transaction() as tx:
            ItemRepository(tx, workspace=MINE)
            await tx.session.scalars(select(Item))


async def test_all_workspaces_is_an_explicit_opt_out(db: Database) -> None:
    """ALL_WORKSPACES reads every workspace; writes then need an explicit workspace_id."""
    mine, theirs = await _seed(db)
    async with db.transaction() as tx:
        items = ItemRepository(tx, workspace=ALL_WORKSPACES)
        assert await items.count() == 5
        assert len(await items.get_many([*mine, *theirs])) == 5
        with pytest.raises(InvalidInputError) as caught:
            await items.create({"title": "where?"})
        assert caught.value.field == "workspace_id"
        made = await items.create({"title": "there", "workspace_id": THEIRS})
        assert made.workspace_id == THEIRS


async def test_reads_never_see_another_workspace(db: Database) -> None:
    """get/find/get_many/count/exists/list/page return only the caller's rows."""
    mine, theirs = await _seed(db)
    with workspace(MINE):
        async with db.transaction() as tx:
            items = ItemRepository(tx, signing_key=KEY)
            for other in theirs:
                assert await items.find(other) is None
                assert await items.with_deleted().find(other) is None
                with pytest.raises(NotFoundError):
                    await items.get(other)
            assert [i.id for i in await items.get_many([*theirs, *mine])] == mine
            assert await items.count() == 3
            assert not await items.exists({"title": "ws2-0"})
            assert await items.with_deleted().count() == 3
            page = await items.list(limit=2)
            rest = await items.list(limit=2, cursor=page.next_cursor)
            assert {i.workspace_id for i in page.items + rest.items} == {MINE}
            assert len(page.items + rest.items) == 3
            offset = await items.page(page_size=10)
            assert offset.total == 3
            assert {i.workspace_id for i in offset.items} == {MINE}


async def test_writes_never_touch_another_workspace(db: Database) -> None:
    """Every write method given another workspace's id changes nothing there."""
    _mine, theirs = await _seed(db)
    before = await _snapshot(db)
    with workspace(MINE):
        for other in theirs:
            for call in (
                lambda r, o=other: r.update(o, {"title": "pwned"}),
                lambda r, o=other: r.update(o, {"title": "pwned"}, expected_version=1),
                lambda r, o=other: r.delete(o),
                lambda r, o=other: r.restore(o),
                lambda r, o=other: r.purge(o),
            ):
                with pytest.raises(NotFoundError):
                    async with db.transaction() as tx:
                        await call(ItemRepository(tx))
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            assert await items.update_many({"title": "ws2-0"}, {"title": "pwned"}) == 0
        with pytest.raises(ConflictError):
            async with db.transaction() as tx:
                await ItemRepository(tx).upsert({"id": theirs[0], "title": "pwned"}, on=["id"])
        with pytest.raises(ConflictError):
            async with db.transaction() as tx:
                await ItemRepository(tx).upsert_many(
                    [{"id": theirs[1], "title": "pwned"}], on=["id"]
                )
        with pytest.raises(InvalidInputError):
            async with db.transaction() as tx:
                await ItemRepository(tx).create({"title": "pwned", "workspace_id": THEIRS})
        with pytest.raises(InvalidInputError):
            async with db.transaction() as tx:
                await ItemRepository(tx).create_many([{"title": "x", "workspace_id": THEIRS}])
    assert await _snapshot(db) == before


async def test_same_upsert_key_in_two_workspaces_stays_separate(db: Database) -> None:
    """An upsert on (workspace_id, code) in my workspace creates my row, leaving theirs alone."""
    _, theirs = await _seed(db)
    with workspace(MINE):
        async with db.transaction() as tx:
            await ItemRepository(tx).upsert_many([{"code": "c0", "title": "mine"}])
    with workspace(THEIRS):
        async with db.transaction() as tx:
            assert (await ItemRepository(tx).get(theirs[0])).title == "ws2-0"


async def test_a_cursor_from_another_workspace_is_invalid(db: Database) -> None:
    """A keyset cursor made in one workspace is refused in another."""
    await _seed(db)
    with workspace(MINE):
        async with db.transaction() as tx:
            cursor = (await ItemRepository(tx, signing_key=KEY).list(limit=1)).next_cursor
    assert cursor is not None
    with workspace(THEIRS):
        async with db.transaction() as tx:
            with pytest.raises(InvalidInputError):
                await ItemRepository(tx, signing_key=KEY).list(limit=1, cursor=cursor)


async def test_repository_scope_is_checked_in_sql_too(db: Database) -> None:
    """Even an ORM statement with ALL_WORKSPACES sees all rows only when asked explicitly."""
    await _seed(db)
    with workspace(MINE):
        async with db.transaction() as tx:
            ItemRepository(tx)
            scoped = await tx.session.scalar(select(func.count()).select_from(Item))
            everything = await tx.session.scalar(
                select(func.count()).select_from(Item),
                execution_options={
                    "corestone_workspace": ALL_WORKSPACES,
                    "corestone_include_deleted": True,
                },
            )
    assert (scoped, everything) == (3, 6)
