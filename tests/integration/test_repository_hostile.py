"""Hostile input through the repository: a clear InvalidInput, no SQL error, nothing written."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from corestone import InvalidInputError
from corestone.db import ALL_WORKSPACES, AuditEntry, Database
from tests.integration.repo_models import (
    KEY,
    Item,
    ItemRepository,
    WidgetRepository,
    database_for,
    workspace,
)

INJECTION = "x'); DROP TABLE items; --"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async for database in database_for(database_url):
        with workspace(1):
            async with database.transaction() as tx:
                await ItemRepository(tx).create_many(
                    [
                        {"title": title, "rank": n}
                        for n, title in enumerate(["100%", "100x", "a_b", "axb", "a\\b", INJECTION])
                    ]
                )
        yield database


async def _state(db: Database) -> tuple[list[tuple[Any, ...]], int]:
    async with db.transaction() as tx:
        rows = await tx.session.execute(
            select(Item.__table__).order_by(Item.__table__.c.id),
            execution_options={"corestone_workspace": ALL_WORKSPACES},
        )
        audit = await tx.session.scalar(select(func.count()).select_from(AuditEntry))
        return [tuple(r) for r in rows], int(audit or 0)


Call = Callable[[ItemRepository], Awaitable[object]]


async def _refused(db: Database, call: Call) -> InvalidInputError:
    """Run ``call`` in a committing transaction: it must raise InvalidInput, write nothing."""
    before = await _state(db)
    with workspace(1), pytest.raises(InvalidInputError) as caught:
        async with db.transaction() as tx:
            await call(ItemRepository(tx, signing_key=KEY))
    assert await _state(db) == before
    return caught.value


async def _titles(db: Database, filters: dict[str, Any]) -> list[str]:
    with workspace(1):
        async with db.transaction() as tx:
            page = await ItemRepository(tx).page(filters=filters, sort="rank", page_size=50)
            return [i.title for i in page.items]


async def test_sql_in_values_is_just_data(db: Database) -> None:
    """SQL in filter values matches literally; stored SQL round-trips unchanged."""
    assert await _titles(db, {"title": INJECTION}) == [INJECTION]
    assert await _titles(db, {"title": {"in": [INJECTION, "' OR 1=1 --"]}}) == [INJECTION]
    assert await _titles(db, {"title": "' OR '1'='1"}) == []
    with workspace(1):
        async with db.transaction() as tx:
            made = await ItemRepository(tx).create({"title": "'; DELETE FROM items; --"})
    assert await _titles(db, {"title": made.title}) == [made.title]


async def test_like_wildcards_are_literal(db: Database) -> None:
    """% and _ and backslash in contains/startswith match themselves, not anything."""
    assert await _titles(db, {"title": {"contains": "%"}}) == ["100%"]
    assert await _titles(db, {"title": {"startswith": "a_"}}) == ["a_b"]
    assert await _titles(db, {"title": {"contains": "\\"}}) == ["a\\b"]
    assert await _titles(db, {"title": {"endswith": "_b"}}) == ["a_b"]


BAD_FILTERS: list[dict[str, Any]] = [
    {"title; DROP TABLE items": "x"},
    {"secret": "x"},  # a real column, but not filterable
    {"title": {"regexp": ".*"}},
    {"rank": "1 OR 1=1"},
    {"rank": {"in": list(range(5000))}},
    {"title": {"contains": 5}},
    {"or": "title"},
]
_deep: dict[str, Any] = {"title": "x"}
for _ in range(12):
    _deep = {"or": [_deep]}
BAD_FILTERS.append(_deep)


async def test_bad_filters_are_invalid_input(db: Database) -> None:
    """Unknown fields and operators, wrong types, huge lists, deep nesting: InvalidInput."""
    for filters in BAD_FILTERS:
        for call in (
            lambda r, f=filters: r.page(filters=f),
            lambda r, f=filters: r.list(filters=f),
            lambda r, f=filters: r.count(f),
            lambda r, f=filters: r.update_many(f, {"title": "pwned"}),
        ):
            error = await _refused(db, call)
            assert (error.field or "").startswith("filter"), (filters, error.field)


BAD_SORTS = ["title; DROP TABLE items", "-(SELECT 1)", "secret", "title,title", "rank desc", ""]


async def test_bad_sorts_are_invalid_input(db: Database) -> None:
    """Sorting only on whitelisted fields; anything else names the sort field."""
    for sort in BAD_SORTS:
        for call in (lambda r, s=sort: r.list(sort=s), lambda r, s=sort: r.page(sort=s)):
            assert (await _refused(db, call)).field == "sort", sort


async def test_bad_limits_are_invalid_input(db: Database) -> None:
    """Limits and page sizes outside 1..500 are refused, not clamped silently into a scan."""
    for limit in (0, -1, 501, 10**9, 2**70):
        await _refused(db, lambda r, n=limit: r.list(limit=n))
        await _refused(db, lambda r, n=limit: r.page(page_size=n))


async def test_bad_pages_are_invalid_input(db: Database) -> None:
    """Page numbers must be positive and bounded."""
    for page in (0, -5, 10**12):
        assert (await _refused(db, lambda r, p=page: r.page(page=p))).field == "page"


async def test_tampered_and_foreign_cursors_are_invalid_input(db: Database) -> None:
    """Edited, truncated, junk, oversized and cross-query cursors are refused as the cursor."""
    with workspace(1):
        async with db.transaction() as tx:
            items = ItemRepository(tx, signing_key=KEY)
            token = (await items.list(sort="rank", limit=2)).next_cursor
            assert token is not None
            widget_token = None
            widgets = WidgetRepository(tx, signing_key=KEY)
            await widgets.create_many([{"name": "a"}, {"name": "b"}, {"name": "c"}])
            widget_token = (await widgets.list(limit=1)).next_cursor
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    cases: list[Call] = [
        lambda r: r.list(sort="rank", limit=2, cursor=flipped),
        lambda r: r.list(sort="rank", limit=2, cursor=token[: len(token) // 2]),
        lambda r: r.list(sort="rank", limit=2, cursor="not-a-cursor"),
        lambda r: r.list(sort="rank", limit=2, cursor="A" * 100_000),
        lambda r: r.list(sort="rank", limit=2, cursor=""),
        lambda r: r.list(sort="-rank", limit=2, cursor=token),  # another sort
        lambda r: r.list(sort="rank", limit=2, cursor=token, filters={"rank": 1}),  # filter
        lambda r: r.list(limit=1, cursor=widget_token),  # another model
    ]
    for call in cases:
        assert (await _refused(db, call)).field == "cursor"
    with workspace(1):
        async with db.transaction() as tx:
            other_key = ItemRepository(tx, signing_key=b"another-key-0123456789abcdef0123")
            with pytest.raises(InvalidInputError):
                await other_key.list(sort="rank", limit=2, cursor=token)


async def test_bad_write_values_write_nothing(db: Database) -> None:
    """Bad ids, values and rows are refused before any SQL; the table is unchanged."""
    cases: list[Call] = [
        lambda r: r.get("1 OR 1=1"),
        lambda r: r.update("1; DROP TABLE items", {"title": "x"}),
        lambda r: r.update(1, {"title": "x" * 101}),
        lambda r: r.update(1, {"rank": "9; --"}),
        lambda r: r.update(1, {"title": "x"}, expected_version="1"),  # type: ignore[arg-type]
        lambda r: r.update(1, ["title"]),  # type: ignore[arg-type]
        lambda r: r.create_many([{"title": "ok"}, {"title": None}]),
        lambda r: r.create_many({"title": "not a list"}),  # type: ignore[arg-type]
        lambda r: r.upsert_many([{"code": "k", "title": "a"}], on=["nope"]),
        lambda r: r.create({"title": "nul\x00byte"}),
        lambda r: r.get(2**64),
    ]
    for call in cases:
        await _refused(db, call)
