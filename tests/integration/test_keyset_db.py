"""Keyset pages on SQLite and PostgreSQL: every row once, in order, both ways, under inserts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    ColumnElement,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
)

from corestone.db import Database
from corestone.db.filters import SortKey, parse_sort
from corestone.db.models import UTCDateTime
from corestone.db.pagination import (
    CursorCodec,
    Direction,
    check_limit,
    keyset_condition,
    order_by,
)
from corestone.errors import InvalidInputError

_Text = String(20).with_variant(String(20, collation="C"), "postgresql")  # code-point order

metadata = MetaData()
rows_table = Table(
    "keyset_rows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("k", Integer, nullable=False),
    Column("n", Integer, nullable=True),
    Column("s", _Text, nullable=True),
    Column("at", UTCDateTime(), nullable=True),
)
SORTABLE: dict[str, ColumnElement[Any]] = {
    name: rows_table.c[name] for name in ("id", "k", "n", "s", "at")
}
CODEC = CursorCodec(b"keyset-test-key-0123456789abcdef")
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """One database and table per test function; examples replace the rows."""
    database = Database(database_url)
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.aclose()


@dataclass(frozen=True)
class Page:
    ids: list[int]
    next_cursor: str | None
    prev_cursor: str | None


async def fetch(
    db: Database, keys: Sequence[SortKey], scope: str, *, limit: int, cursor: str | None = None
) -> Page:
    """One keyset page, the way a repository builds it: limit + 1 rows tell if there is more."""
    size = check_limit(limit)
    direction: Direction = "next"
    stmt = select(rows_table)
    if cursor is not None:
        values, direction = CODEC.decode(cursor, scope=scope)
        stmt = stmt.where(keyset_condition(keys, values, direction=direction))
    stmt = stmt.order_by(*order_by(keys, direction=direction)).limit(size + 1)
    async with db.engine.connect() as conn:
        rows = list((await conn.execute(stmt)).mappings())
    more = len(rows) > size
    rows = rows[:size]
    if direction == "prev":
        rows.reverse()
    has_next = more if direction == "next" else cursor is not None
    has_prev = cursor is not None if direction == "next" else more

    def token(row: Any, towards: Direction) -> str:
        return CODEC.encode([row[key.name] for key in keys], scope=scope, direction=towards)

    return Page(
        ids=[row["id"] for row in rows],
        next_cursor=token(rows[-1], "next") if rows and has_next else None,
        prev_cursor=token(rows[0], "prev") if rows and has_prev else None,
    )


async def _load(db: Database, rows: list[dict[str, Any]]) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(delete(rows_table))
        if rows:
            await conn.execute(insert(rows_table), rows)


# -- the order, computed in Python ---------------------------------------------------------


class _Desc:
    """Inverts the order of the value it wraps (for descending keys of any type)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Desc) -> bool:
        return bool(other.value < self.value)

    def __gt__(self, other: _Desc) -> bool:
        return bool(other.value > self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]


def sort_key(row: dict[str, Any], keys: Sequence[SortKey]) -> tuple[Any, ...]:
    """NULL is the largest value; descending keys reverse it; the id (in keys) breaks ties."""
    parts: list[Any] = []
    for key in keys:
        value = row[key.name]
        ranked = (1, 0) if value is None else (0, value)  # NULL after every value
        parts.append(_Desc(ranked) if key.descending else ranked)
    return tuple(parts)


def expected_order(rows: list[dict[str, Any]], keys: Sequence[SortKey]) -> list[int]:
    return [row["id"] for row in sorted(rows, key=lambda row: sort_key(row, keys))]


# -- strategies ----------------------------------------------------------------------------

SMALL = st.integers(min_value=0, max_value=3)  # few values: many ties


def _row(draw: st.DrawFn, row_id: int) -> dict[str, Any]:
    return {
        "id": row_id,
        "k": draw(SMALL),
        "n": draw(st.one_of(st.none(), SMALL)),
        "s": draw(st.one_of(st.none(), st.text(alphabet="aAbé", max_size=2))),
        "at": draw(st.one_of(st.none(), SMALL.map(lambda h: T0 + timedelta(hours=h)))),
    }


@st.composite
def tables(draw: st.DrawFn) -> list[dict[str, Any]]:
    ids = draw(st.lists(st.integers(min_value=1, max_value=10_000), max_size=25, unique=True))
    return [_row(draw, row_id) for row_id in ids]


sorts = st.lists(
    st.tuples(st.sampled_from(["k", "n", "s", "at", "id"]), st.booleans()),
    min_size=0,
    max_size=3,
    unique_by=lambda term: term[0],
).map(lambda terms: [("-" if desc else "") + name for name, desc in terms])

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _keys(sort: list[str]) -> tuple[SortKey, ...]:
    return parse_sort(sort, SORTABLE, tiebreak=rows_table.c.id)


def _scope(keys: Sequence[SortKey]) -> str:
    return "keyset_rows|" + ",".join(("-" if key.descending else "") + key.name for key in keys)


async def walk_forward(db: Database, keys: Sequence[SortKey], limit: int) -> list[Page]:
    pages = [await fetch(db, keys, _scope(keys), limit=limit)]
    while pages[-1].next_cursor is not None:
        assert len(pages) <= 30, "the walk does not end"
        pages.append(await fetch(db, keys, _scope(keys), limit=limit, cursor=pages[-1].next_cursor))
    return pages


# -- properties ----------------------------------------------------------------------------


@SETTINGS
@given(rows=tables(), sort=sorts, limit=st.integers(min_value=1, max_value=7))
async def test_walking_forward_then_back_yields_every_row_once_in_order(
    db: Database, rows: list[dict[str, Any]], sort: list[str], limit: int
) -> None:
    """Forward from the start and back from the end, with ties and NULLs, each row comes once."""
    await _load(db, rows)
    keys = _keys(sort)
    expected = expected_order(rows, keys)

    forward = await walk_forward(db, keys, limit)
    assert [row_id for page in forward for row_id in page.ids] == expected
    assert all(len(page.ids) == limit for page in forward[:-1])
    assert forward[0].prev_cursor is None

    backward = [forward[-1]]
    while backward[-1].prev_cursor is not None:
        assert len(backward) <= 30, "the walk does not end"
        backward.append(
            await fetch(db, keys, _scope(keys), limit=limit, cursor=backward[-1].prev_cursor)
        )
    assert [row_id for page in reversed(backward) for row_id in page.ids] == expected
    assert all(page.next_cursor is not None for page in backward[1:])


@SETTINGS
@given(
    rows=tables(),
    sort=sorts,
    limit=st.integers(min_value=1, max_value=5),
    inserts=st.data(),
)
async def test_rows_inserted_during_a_walk_are_seen_once_if_ahead_and_never_if_behind(
    db: Database, rows: list[dict[str, Any]], sort: list[str], limit: int, inserts: st.DataObject
) -> None:
    """Between pages new rows arrive; nothing pre-existing is skipped or repeated."""
    await _load(db, rows)
    keys = _keys(sort)
    scope = _scope(keys)
    existing = {row["id"]: row for row in rows}
    ahead: set[int] = set()
    behind: set[int] = set()
    every = dict(existing)
    next_id = 10_001
    seen: list[int] = []
    cursor: str | None = None
    for round_ in range(100):  # at most 25 rows + 8 rounds of 3 inserts: it ends
        page = await fetch(db, keys, scope, limit=limit, cursor=cursor)
        seen += page.ids
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        boundary = sort_key(every[page.ids[-1]], keys)
        count = inserts.draw(SMALL) if round_ < 8 else 0
        new = [_row(inserts.draw, next_id + i) for i in range(count)]
        next_id += len(new)
        for row in new:
            every[row["id"]] = row
            (ahead if sort_key(row, keys) > boundary else behind).add(row["id"])
        if new:
            async with db.engine.begin() as conn:
                await conn.execute(insert(rows_table), new)
    else:
        pytest.fail("the walk does not end")

    assert len(seen) == len(set(seen)), "a row was repeated"
    assert [i for i in seen if i in existing] == expected_order(rows, keys)
    assert ahead <= set(seen)
    assert not behind & set(seen)
    assert seen == expected_order([every[i] for i in seen], keys)


# -- fixed cases ---------------------------------------------------------------------------


async def test_a_cursor_for_another_sort_is_refused_before_any_sql(db: Database) -> None:
    """A cursor made for one sort is InvalidInput for another (the scope includes the sort)."""
    await _load(db, [{"id": i, "k": i % 2, "n": None, "s": None, "at": None} for i in range(5)])
    keys = _keys(["k"])
    first = await fetch(db, keys, _scope(keys), limit=2)
    assert first.next_cursor is not None

    other = _keys(["-k"])
    with pytest.raises(InvalidInputError) as caught:
        await fetch(db, other, _scope(other), limit=2, cursor=first.next_cursor)

    assert caught.value.field == "cursor"


async def test_all_null_sort_keys_page_by_the_tiebreak(db: Database) -> None:
    """When every sort value is NULL, the id alone orders the pages, both directions."""
    await _load(db, [{"id": i, "k": 0, "n": None, "s": None, "at": None} for i in range(1, 8)])
    for sort, expected in ((["n"], [1, 2, 3, 4, 5, 6, 7]), (["-n"], [7, 6, 5, 4, 3, 2, 1])):
        keys = _keys(sort)

        pages = await walk_forward(db, keys, 3)

        assert [row_id for page in pages for row_id in page.ids] == expected
