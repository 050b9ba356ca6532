"""Property: walking keyset pages through the repository yields every row once, in order.

Both directions, on both databases, with heavy ties (the id breaks them) and with rows
inserted between pages (they may appear or not, but nothing repeats or goes missing, and
the order never breaks).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from corestone.db import Database
from tests.integration.repo_models import KEY, Item, ItemRepository, database_for, workspace

SORTS = ["rank", "-rank", "title", "-title", "rank,-title", "-created_at", "status,rank"]

rows_strategy = st.lists(
    st.tuples(st.integers(0, 3), st.text(alphabet="abc", max_size=2)), min_size=0, max_size=25
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        yield database


async def _reset(db: Database, rows: list[tuple[int, str]]) -> None:
    with workspace(1):
        async with db.transaction() as tx:
            await tx.session.execute(delete(Item), execution_options={"synchronize_session": False})
            await ItemRepository(tx).create_many(
                [{"rank": rank, "title": title, "status": "open"} for rank, title in rows]
            )


async def _order(db: Database, sort: str) -> list[int]:
    with workspace(1):
        async with db.transaction() as tx:
            page = await ItemRepository(tx).page(sort=sort, page_size=500)
            return [i.id for i in page.items]


async def _walk(
    db: Database,
    sort: str,
    limit: int,
    *,
    backward_from: str | None = None,
    insert_between: list[tuple[int, str]] | None = None,
) -> tuple[list[int], str | None]:
    """Follow next (or prev) cursors to the end: the ids in order, and the last other cursor."""
    seen: list[int] = []
    cursor = backward_from
    pending = list(insert_between or [])
    other: str | None = None
    for _ in range(200):
        with workspace(1):
            async with db.transaction() as tx:
                items = ItemRepository(tx, signing_key=KEY)
                page = await items.list(sort=sort, limit=limit, cursor=cursor)
                if pending:
                    rank, title = pending.pop()
                    await items.create({"rank": rank, "title": title})
        ids = [i.id for i in page.items]
        if backward_from is None:
            seen += ids
            cursor, other = page.next_cursor, page.prev_cursor
        else:
            seen = ids + seen
            cursor, other = page.prev_cursor, page.next_cursor
        if cursor is None:
            return seen, other
    raise AssertionError("the walk did not end")


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(rows=rows_strategy, sort=st.sampled_from(SORTS), limit=st.integers(1, 7), data=st.data())
async def test_keyset_walks_cover_every_row_once_in_order(
    db: Database, rows: list[tuple[int, str]], sort: str, limit: int, data: st.DataObject
) -> None:
    """Forward and backward walks equal the full ordering; inserts mid-walk never duplicate."""
    await _reset(db, rows)
    expected = await _order(db, sort)
    forward, _ = await _walk(db, sort, limit)
    assert forward == expected
    if forward:
        # Start from the last row's page and walk back to the first.
        last_page_cursor = None
        with workspace(1):
            async with db.transaction() as tx:
                items = ItemRepository(tx, signing_key=KEY)
                cursor = None
                while True:
                    page = await items.list(sort=sort, limit=limit, cursor=cursor)
                    if page.next_cursor is None:
                        break
                    cursor = last_page_cursor = page.next_cursor
        tail = [i.id for i in page.items]
        if last_page_cursor is not None and page.prev_cursor is not None:
            backward, _ = await _walk(db, sort, limit, backward_from=page.prev_cursor)
            assert backward + tail == expected
    inserts = data.draw(rows_strategy.filter(lambda r: len(r) <= 5), label="inserted mid-walk")
    during, _ = await _walk(db, sort, limit, insert_between=inserts)
    final = await _order(db, sort)
    assert len(during) == len(set(during))
    assert set(expected) <= set(during)
    assert during == [i for i in final if i in set(during)]
