"""The notification feed and the preferences, on each database: idempotent creation,
pages and cursors, read state, and preferences checked whole before anything is written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from corestone.db import Base, Database
from corestone.errors import InvalidInputError, NotFoundError
from corestone.push import Channels, NotificationFeed, PreferenceStore
from corestone.push.notifications import NotificationRecord
from corestone.push.preferences import PreferenceRecord

KEY = b"k" * 32
NOTIFICATIONS = NotificationRecord.__tablename__
PREFERENCES = PreferenceRecord.__tablename__
KINDS = {
    "task.assigned": Channels(in_app=True, email=True, push=True),
    "task.changed": Channels(),
}


async def create_tables(database: Database, *names: str) -> None:
    """The corestone tables named (their models are imported: they are on corestone's Base)."""
    tables = [Base.metadata.tables[name] for name in names]
    async with database.engine.begin() as conn:
        await conn.run_sync(lambda c: Base.metadata.create_all(c, tables=tables))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.start()
    await create_tables(database, NOTIFICATIONS, PREFERENCES)
    yield database
    await database.aclose()


@pytest.fixture
def feed() -> NotificationFeed:
    return NotificationFeed(KEY, max_limit=10)


async def make(db: Database, feed: NotificationFeed, user: str, event: str, **extra: Any) -> bool:
    async with db.transaction() as tx:
        _, created = await feed.create(
            tx.session, user_id=user, kind="task.assigned", event_id=event, title=event, **extra
        )
    return created


async def test_creating_twice_makes_one_row(db: Database, feed: NotificationFeed) -> None:
    """The same (event, user, kind) again, in turn and at once: one row, one ``created``."""
    assert await make(db, feed, "7", "e1") is True
    assert await make(db, feed, "7", "e1") is False
    results = await asyncio.gather(*(make(db, feed, "7", "e2") for _ in range(4)))
    assert sorted(results) == [False, False, False, True]
    assert await make(db, feed, "8", "e1") is True  # another user: another notification
    async with db.transaction(read_only=True) as tx:
        count = await tx.session.scalar(select(func.count()).select_from(NotificationRecord))
    assert count == 3


async def test_pages_run_newest_first_and_filter_unread(
    db: Database, feed: NotificationFeed
) -> None:
    """Five notifications, pages of two: newest first, no repeats, the last cursor None;
    the unread filter leaves out what was read; the count follows."""
    for n in range(5):
        await make(db, feed, "7", f"e{n}", data={"task_id": n})
    await make(db, feed, "8", "other")
    seen: list[str] = []
    cursor = None
    async with db.transaction() as tx:
        while True:
            page = await feed.page(tx.session, "7", cursor=cursor, limit=2)
            seen += [n.event_id for n in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == ["e4", "e3", "e2", "e1", "e0"]
        first = (await feed.page(tx.session, "7", limit=5)).items
        assert first[0].data == {"task_id": 4}
        await feed.mark_read(tx.session, "7", first[0].id)
        await feed.mark_read(tx.session, "7", first[2].id)
        unread = await feed.page(tx.session, "7", unread=True)
        assert [n.event_id for n in unread.items] == ["e3", "e1", "e0"]
        assert await feed.unread_count(tx.session, "7") == 3
        assert await feed.mark_all_read(tx.session, "7") == 3
        assert await feed.unread_count(tx.session, "7") == 0
        assert await feed.unread_count(tx.session, "8") == 1


async def test_a_cursor_works_only_for_its_user_and_filter(
    db: Database, feed: NotificationFeed
) -> None:
    """A cursor edited, or replayed for another user or the other filter, is a 422 on
    ``cursor``; a limit out of range one on ``limit``."""
    for n in range(3):
        await make(db, feed, "7", f"e{n}")
    async with db.transaction(read_only=True) as tx:
        cursor = (await feed.page(tx.session, "7", limit=1)).next_cursor
        assert cursor is not None
        tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
        for user, unread, token in (
            ("7", False, tampered),
            ("8", False, cursor),
            ("7", True, cursor),
            ("7", False, "not-a-cursor"),
        ):
            with pytest.raises(InvalidInputError) as refused:
                await feed.page(tx.session, user, unread=unread, cursor=token)
            assert refused.value.field == "cursor"
        for limit in (0, 11):
            with pytest.raises(InvalidInputError) as bad:
                await feed.page(tx.session, "7", limit=limit)
            assert bad.value.field == "limit"


async def test_marking_another_users_notification_is_not_found(
    db: Database, feed: NotificationFeed
) -> None:
    """Another user's id and a missing id are both NotFoundError; marking twice keeps the
    first read time."""
    await make(db, feed, "7", "e1")
    async with db.transaction() as tx:
        [mine] = (await feed.page(tx.session, "7")).items
        for user, notification in (("8", mine.id), ("7", mine.id + 1000)):
            with pytest.raises(NotFoundError):
                await feed.mark_read(tx.session, user, notification)
        await feed.mark_read(tx.session, "7", mine.id)
        [first] = (await feed.page(tx.session, "7")).items
        await feed.mark_read(tx.session, "7", mine.id)
        [again] = (await feed.page(tx.session, "7")).items
    assert first.read_at is not None
    assert again.read_at == first.read_at


async def test_preferences_fill_in_defaults_and_change_only_what_is_named(db: Database) -> None:
    """Every kind is present with its defaults; an update changes only the channels it
    names, for that user only."""
    store = PreferenceStore(KINDS)
    async with db.transaction() as tx:
        assert await store.get(tx.session, "7") == KINDS
        after = await store.update(tx.session, "7", {"task.assigned": {"email": False}})
        assert after["task.assigned"] == Channels(in_app=True, email=False, push=True)
        after = await store.update(tx.session, "7", {"task.assigned": {"push": False}})
        assert after["task.assigned"] == Channels(in_app=True, email=False, push=False)
        assert await store.channels(tx.session, "7", "task.changed") == Channels()
        assert await store.get(tx.session, "8") == KINDS


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"task.bogus": {"email": True}}, "preferences.task.bogus"),
        ({"task.changed": {"sms": True}}, "preferences.task.changed.sms"),
        ({"task.changed": {"email": "yes"}}, "preferences.task.changed.email"),
        ({"task.changed": True}, "preferences.task.changed"),
    ],
    ids=["kind", "channel", "value", "shape"],
)
async def test_a_bad_preference_names_its_field_and_writes_nothing(
    db: Database, changes: dict[str, Any], field: str
) -> None:
    """An unknown kind or channel, or a value that is not a boolean, is InvalidInputError
    naming it; the valid change listed before it is not written either."""
    store = PreferenceStore(KINDS)
    async with db.transaction() as tx:
        with pytest.raises(InvalidInputError) as refused:
            await store.update(tx.session, "7", {"task.assigned": {"email": False}} | changes)
        assert refused.value.field == field
        assert await store.get(tx.session, "7") == KINDS
