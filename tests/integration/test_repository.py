"""Repository reads and writes on SQLite and PostgreSQL: the behaviour callers rely on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from corestone import ConflictError, InvalidInputError, NotFoundError
from corestone.db import Database
from tests.integration.repo_models import (
    KEY,
    Item,
    ItemRepository,
    Widget,
    WidgetRepository,
    database_for,
    workspace,
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        yield database


async def test_create_get_find_and_missing(db: Database) -> None:
    """create returns the stored row with defaults; get raises NotFound, find returns None."""
    async with db.transaction() as tx:
        widgets = WidgetRepository(tx)
        made = await widgets.create({"name": "gear"})
        assert made.id > 0
        assert made.size == 0
        assert made.created_at.tzinfo is not None
        assert (await widgets.get(made.id)).name == "gear"
        assert await widgets.find(made.id + 1000) is None
        with pytest.raises(NotFoundError):
            await widgets.get(made.id + 1000)
    async with db.transaction() as tx:
        assert (await WidgetRepository(tx).get(str(made.id))).name == "gear"


async def test_get_many_keeps_order_and_skips_missing(db: Database) -> None:
    """get_many returns found rows in the order asked, once each."""
    async with db.transaction() as tx:
        widgets = WidgetRepository(tx)
        ids = await widgets.create_many([{"name": f"w{i}", "size": i} for i in range(5)])
        got = await widgets.get_many([ids[3], 999_999, ids[0], ids[3]])
        assert [w.name for w in got] == ["w3", "w0"]


async def test_create_many_returns_ids_in_order_with_defaults(db: Database) -> None:
    """create_many's ids line up with the input rows; Python defaults are applied."""
    with workspace(7):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            rows = [{"title": f"t{i}", "rank": i} for i in range(30)]
            rows[5] = {"title": "t5", "rank": 5, "status": "done"}
            ids = await items.create_many(rows)
            assert len(set(ids)) == 30
            loaded = await items.get_many(ids)
            assert [(i.title, i.rank) for i in loaded] == [(r["title"], r["rank"]) for r in rows]
            assert loaded[5].status == "done"
            assert loaded[0].status == "open"
            assert all(i.workspace_id == 7 and i.version == 1 for i in loaded)
            assert all(i.created_at is not None for i in loaded)


async def test_create_validates_fields(db: Database) -> None:
    """Unknown fields, wrong types, too-long strings and missing required ones are InvalidInput."""
    async with db.transaction() as tx:
        widgets = WidgetRepository(tx)
        cases = [
            ({"name": "x", "colour": "red"}, "colour", "unknown"),
            ({"name": 5}, "name", "type"),
            ({"name": "x" * 51}, "name", "max_length"),
            ({"size": 1}, "name", "required"),
            ({"name": None}, "name", "not_null"),
            ({"name": "x", "size": True}, "size", "type"),
        ]
        for values, field, rule in cases:
            with pytest.raises(InvalidInputError) as caught:
                await widgets.create(values)
            assert (caught.value.field, caught.value.rule) == (field, rule), values
        with pytest.raises(InvalidInputError) as many:
            await widgets.create_many([{"name": "ok"}, {"name": "bad", "nope": 1}])
        assert many.value.field == "rows[1].nope"
        assert await widgets.count() == 0


async def test_duplicate_is_conflict(db: Database) -> None:
    """A unique violation is ConflictError on create and on create_many."""
    async with db.transaction() as tx:
        await WidgetRepository(tx).create({"name": "dup"})
    with pytest.raises(ConflictError):
        async with db.transaction() as tx:
            await WidgetRepository(tx).create({"name": "dup"})
    with pytest.raises(ConflictError):
        async with db.transaction() as tx:
            await WidgetRepository(tx).create_many([{"name": "a1"}, {"name": "dup"}])
    async with db.transaction() as tx:
        assert await WidgetRepository(tx).count() == 1


async def test_update_is_partial_and_validated(db: Database) -> None:
    """update changes only the given fields, bumps the version, refreshes updated_at."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            item = await items.create({"title": "a", "rank": 1})
            created_updated_at = item.updated_at
            changed = await items.update(item.id, {"rank": 2})
            assert (changed.title, changed.rank, changed.version) == ("a", 2, 2)
            assert changed.updated_at >= created_updated_at
            assert item.rank == 2  # the object in the session was refreshed too
            for values, field in (
                ({"nope": 1}, "nope"),
                ({"version": 9}, "version"),
                ({"workspace_id": 2}, "workspace_id"),
                ({"id": 5}, "id"),
            ):
                with pytest.raises(InvalidInputError) as caught:
                    await items.update(item.id, values)
                assert caught.value.field == field
            with pytest.raises(NotFoundError):
                await items.update(item.id + 100, {"rank": 3})
            assert (await items.update(item.id, {})).version == 2


async def test_update_many_by_filter(db: Database) -> None:
    """update_many changes exactly the matching rows and reports how many."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            await items.create_many([{"title": f"t{i}", "rank": i % 2} for i in range(6)])
            assert await items.update_many({"rank": 1}, {"status": "done"}) == 3
            assert await items.count({"status": "done"}) == 3
            assert await items.update_many({"rank": 7}, {"status": "done"}) == 0
            with pytest.raises(InvalidInputError):
                await items.update_many({"rank": 1}, {})


async def test_soft_delete_restore_purge(db: Database) -> None:
    """delete hides the row, with_deleted sees it, restore brings it back, purge removes it."""
    with workspace(1, actor="deleter"):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            item = await items.create({"title": "doomed"})
            await items.delete(item.id)
            assert await items.find(item.id) is None
            assert await items.count() == 0
            assert not await items.exists()
            with pytest.raises(NotFoundError):
                await items.delete(item.id)
            with pytest.raises(NotFoundError):
                await items.update(item.id, {"rank": 1})
            hidden = await items.with_deleted().get(item.id)
            assert hidden.deleted_by == "deleter"
            assert hidden.deleted_at is not None
            restored = await items.restore(item.id)
            assert restored.deleted_at is None
            assert restored.version == 3
            assert (await items.restore(item.id)).version == 3  # restoring a live row is a no-op
            await items.delete(item.id)
            await items.purge(item.id)
            assert await items.with_deleted().find(item.id) is None
            with pytest.raises(NotFoundError):
                await items.purge(item.id)
            with pytest.raises(NotFoundError):
                await items.restore(item.id)


async def test_hard_delete_without_soft_delete_mixin(db: Database) -> None:
    """delete on a model without SoftDeleteMixin removes the row."""
    async with db.transaction() as tx:
        widgets = WidgetRepository(tx)
        widget = await widgets.create({"name": "gone"})
        await widgets.delete(widget.id)
        assert await widgets.find(widget.id) is None
        assert (await tx.session.scalars(select(Widget))).all() == []


async def test_upsert_inserts_then_updates(db: Database) -> None:
    """upsert inserts a new key and updates an existing one, bumping its version."""
    with workspace(3):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            first = await items.upsert({"code": "A-1", "title": "first"})
            again = await items.upsert({"code": "A-1", "title": "second"})
            assert first.id == again.id
            assert again.title == "second"
            assert again.version == 2
            assert await items.count() == 1


async def test_upsert_many(db: Database) -> None:
    """upsert_many inserts new keys and updates existing ones in one call."""
    with workspace(3):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            await items.create_many([{"code": f"c{i}", "title": "old"} for i in range(3)])
            rows = [{"code": f"c{i}", "title": "new"} for i in range(5)]
            assert await items.upsert_many(rows) == 5
            page = await items.page(sort="title", page_size=10)
            assert page.total == 5
            assert {i.title for i in page.items} == {"new"}
            with pytest.raises(InvalidInputError):
                await items.upsert_many([{"code": "x", "title": "a"}, {"code": "x", "title": "b"}])
        async with db.transaction() as tx:
            widgets = WidgetRepository(tx)
            assert await widgets.upsert_many([{"name": "n1", "size": 1}, {"name": "n2"}]) == 2
            assert await widgets.upsert_many([{"name": "n1", "size": 5}]) == 1
            assert (await widgets.page(filters={"name": "n1"})).items[0].size == 5


async def test_offset_page_and_count(db: Database) -> None:
    """page returns the requested slice in sort order, and the total."""
    async with db.transaction() as tx:
        widgets = WidgetRepository(tx)
        await widgets.create_many([{"name": f"w{i:02d}", "size": i % 3} for i in range(23)])
        second = await widgets.page(sort="name", page=2, page_size=10)
        assert [w.name for w in second.items] == [f"w{i:02d}" for i in range(10, 20)]
        assert second.total == 23
        assert second.page == 2
        last = await widgets.page(filters={"size": 0}, sort="-name", page=1, page_size=3)
        assert [w.name for w in last.items] == ["w21", "w18", "w15"]
        assert last.total == 8
        assert await widgets.count({"size": 1}) == 8
        with pytest.raises(InvalidInputError):
            await widgets.page(page=0)


async def test_keyset_walks_forward_and_back(db: Database) -> None:
    """Keyset pages cover every row once, in order, both ways, with ties broken by id."""
    async with db.transaction() as tx:
        widgets = WidgetRepository(tx, signing_key=KEY)
        await widgets.create_many([{"name": f"w{i:02d}", "size": i % 4} for i in range(17)])
        expected = (await widgets.page(sort="-size", page_size=100)).items
        assert [w.size for w in expected] == sorted((w.size for w in expected), reverse=True)
        seen, cursor = [], None
        while True:
            page = await widgets.list(sort="-size", limit=5, cursor=cursor)
            seen += page.items
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert [w.id for w in seen] == [w.id for w in expected]
        back, cursor = [], page.prev_cursor
        while cursor is not None:
            page = await widgets.list(sort="-size", limit=5, cursor=cursor)
            back = page.items + back
            cursor = page.prev_cursor
        assert [w.id for w in back + seen[-2:]] == [w.id for w in expected]


async def test_timestamps_are_microsecond_precise(db: Database) -> None:
    """created_at keeps sub-second precision on both databases (keyset on time needs it)."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            ids = await items.create_many([{"title": "a"}, {"title": "b"}])
            await items.create({"title": "c"})
        async with db.transaction() as tx:
            loaded = (await ItemRepository(tx).page(sort="created_at")).items
            assert [i.title for i in loaded] == ["a", "b", "c"]
            assert loaded[-1].created_at - loaded[0].created_at < timedelta(seconds=5)
            assert any(i.created_at.microsecond for i in loaded)
            assert ids == [loaded[0].id, loaded[1].id]


async def test_objects_survive_the_transaction(db: Database) -> None:
    """Returned objects stay readable after commit (no lazy reload needed)."""
    with workspace(1):
        async with db.transaction() as tx:
            item = await ItemRepository(tx).create({"title": "kept"})
        assert item.title == "kept"
        assert item.version == 1
        async with db.transaction() as tx:
            assert (await tx.session.get(Item, item.id)) is not None


async def test_upsert_never_revives_a_soft_deleted_row(db: Database) -> None:
    """An upsert whose key belongs to a soft-deleted row is a conflict, not a silent update."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            item = await items.upsert({"code": "gone", "title": "v1"})
            await items.delete(item.id)
        with pytest.raises(ConflictError):
            async with db.transaction() as tx:
                await ItemRepository(tx).upsert({"code": "gone", "title": "v2"})
        async with db.transaction() as tx:
            hidden = await ItemRepository(tx).with_deleted().get(item.id)
            assert hidden.title == "v1"
