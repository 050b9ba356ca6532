"""The audit log: one row per change, in the same transaction, with before and after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, func, select

from corestone import InvalidInputError
from corestone.db import AuditEntry, Database, audit_entries
from tests.integration.repo_models import ItemRepository, WidgetRepository, database_for, workspace


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        yield database


async def _log(db: Database, ws: int = 1) -> list[dict[str, Any]]:
    async with db.transaction() as tx:
        entries = await audit_entries(tx, workspace_id=ws, limit=500)
    return [e.as_dict() for e in reversed(entries)]


async def test_every_action_is_recorded_with_before_and_after(db: Database) -> None:
    """create, update, delete, restore and purge each write one entry with the changed fields."""
    with workspace(1, actor="alice"):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            item = await items.create({"title": "a", "rank": 1})
            await items.update(item.id, {"title": "b", "rank": 1})
            await items.delete(item.id)
            await items.restore(item.id)
            await items.purge(item.id)
    log = await _log(db)
    assert [e["action"] for e in log] == ["create", "update", "delete", "restore", "purge"]
    assert {(e["entity"], e["entity_id"], e["actor_id"], e["workspace_id"]) for e in log} == {
        ("Item", str(item.id), "alice", 1)
    }
    assert {e["correlation_id"] for e in log} == {"req-1"}
    create, update, delete, restore, purge = (e["changes"] for e in log)
    assert create["title"] == {"before": None, "after": "a"}
    assert create["rank"] == {"before": None, "after": 1}
    assert update == {"title": {"before": "a", "after": "b"}}  # rank did not change
    assert delete["deleted_at"]["before"] is None
    assert delete["deleted_at"]["after"] is not None
    assert delete["deleted_by"] == {"before": None, "after": "alice"}
    assert restore["deleted_at"]["after"] is None
    assert purge["title"] == {"before": "b", "after": None}
    assert all(e["at"] for e in log)


async def test_excluded_fields_are_redacted_and_no_op_updates_not_logged(db: Database) -> None:
    """Excluded fields show as changed but redacted; an update that changes nothing logs nothing."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            item = await items.create({"title": "s", "secret": "hunter2"})
            await items.update(item.id, {"secret": "hunter3"})
            await items.update(item.id, {"title": "s"})
    log = await _log(db)
    assert [e["action"] for e in log] == ["create", "update"]
    assert log[0]["changes"]["secret"] == {"before": "<redacted>", "after": "<redacted>"}
    assert log[1]["changes"] == {"secret": {"before": "<redacted>", "after": "<redacted>"}}
    assert "hunter" not in repr(log)


async def test_unaudited_models_write_nothing(db: Database) -> None:
    """A model without AuditedMixin leaves the log empty."""
    async with db.transaction() as tx:
        widgets = WidgetRepository(tx)
        widget = await widgets.create({"name": "quiet"})
        await widgets.update(widget.id, {"size": 3})
        await widgets.delete(widget.id)
        assert await tx.session.scalar(select(func.count()).select_from(AuditEntry)) == 0


async def test_audit_rolls_back_with_the_change(db: Database) -> None:
    """A rolled-back savepoint or transaction takes its audit rows with it."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            item = await items.create({"title": "kept"})
            with pytest.raises(RuntimeError):
                async with db.transaction():
                    await items.update(item.id, {"title": "undone"})
                    raise RuntimeError
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await ItemRepository(tx).update(item.id, {"title": "also undone"})
                raise RuntimeError
    assert [e["action"] for e in await _log(db)] == ["create"]


async def test_bulk_operations_audit_in_one_statement(db: Database) -> None:
    """create_many, update_many and upsert_many each write their entries with one INSERT."""
    inserts: list[str] = []

    def count_audit_inserts(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO CORESTONE_AUDIT_LOG"):
            inserts.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", count_audit_inserts)
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            ids = await items.create_many([{"title": f"t{i}", "code": f"c{i}"} for i in range(40)])
            assert len(inserts) == 1
            assert await items.update_many({"title": {"in": ["t1", "t2", "t3"]}}, {"rank": 5}) == 3
            assert len(inserts) == 2
            rows = [{"code": f"c{i}", "title": f"u{i}"} for i in range(38, 43)]
            assert await items.upsert_many(rows) == 5
            assert len(inserts) == 4  # one for the creates, one for the updates
    log = await _log(db)
    assert [e["action"] for e in log].count("create") == 43
    by_id = {e["entity_id"]: e for e in log if e["action"] == "update" and e["changes"].get("rank")}
    assert set(by_id) == {str(i) for i in ids[1:4]}
    updated = [e for e in log if e["action"] == "update" and "title" in e["changes"]]
    assert sorted(e["changes"]["title"]["before"] for e in updated) == ["t38", "t39"]


async def test_upsert_records_create_then_update(db: Database) -> None:
    """A single upsert is logged as a create the first time and an update after."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx)
            await items.upsert({"code": "k", "title": "one"})
            await items.upsert({"code": "k", "title": "two"})
    log = await _log(db)
    assert [e["action"] for e in log] == ["create", "update"]
    assert log[1]["changes"]["title"] == {"before": "one", "after": "two"}


async def test_reading_the_log_is_scoped_and_paged(db: Database) -> None:
    """audit_entries returns one workspace's entries, newest first, paged by before_id."""
    for ws in (1, 2):
        with workspace(ws):
            async with db.transaction() as tx:
                await ItemRepository(tx).create_many([{"title": f"w{ws}-{i}"} for i in range(5)])
    async with db.transaction() as tx:
        first = await audit_entries(tx, workspace_id=1, limit=3)
        rest = await audit_entries(tx, workspace_id="1", limit=3, before_id=first[-1].id)
        assert [e.workspace_id for e in first + rest] == [1] * 5
        ids = [e.id for e in first + rest]
        assert ids == sorted(ids, reverse=True)
        newest = first[0]
        only = await audit_entries(
            tx, workspace_id=1, limit=10, entity="Item", entity_id=newest.entity_id
        )
        assert [e.id for e in only] == [newest.id]
        for bad in (0, 501, True):
            with pytest.raises(InvalidInputError):
                await audit_entries(tx, workspace_id=1, limit=bad)
        with pytest.raises(InvalidInputError):
            await audit_entries(tx, workspace_id="1; DROP TABLE items", limit=5)


async def test_the_longest_accepted_correlation_id_is_stored_whole(db: Database) -> None:
    """An X-Request-ID of the longest length the middleware accepts is stored untruncated."""
    from corestone import context

    longest = "r" * context.MAX_CORRELATION_ID_LENGTH
    assert context.sanitize_correlation_id(longest) == longest  # the middleware keeps it
    with workspace(1, actor="alice"), context.bind(correlation=longest):
        async with db.transaction() as tx:
            await ItemRepository(tx).create({"title": "a", "rank": 1})

    [entry] = await _log(db)
    assert entry["correlation_id"] == longest
