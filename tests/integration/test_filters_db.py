"""compile_filter on SQLite and PostgreSQL: exactly the rows a plain Python filter picks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
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
    func,
    insert,
    select,
)

from corestone.db import Database
from corestone.db.filters import compile_filter
from corestone.db.models import UTCDateTime
from corestone.errors import InvalidInputError

# Code-point order on both databases: SQLite compares bytes, PostgreSQL gets collation "C",
# so string comparisons can be checked against Python's own.
_Text = String(40).with_variant(String(40, collation="C"), "postgresql")

metadata = MetaData()
rows_table = Table(
    "filter_rows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("n", Integer, nullable=True),
    Column("s", _Text, nullable=True),
    Column("at", UTCDateTime(), nullable=True),
    Column("k", Integer, nullable=False),
)
FIELDS: dict[str, ColumnElement[Any]] = {
    name: rows_table.c[name] for name in ("id", "n", "s", "at", "k")
}

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTS = st.integers(min_value=-3, max_value=3)
# Letters whose case matters, LIKE's wildcards and escape, and non-ASCII pairs.
TEXTS = st.text(alphabet="aAbBzZ%_\\ éÉßẞ", max_size=4)
TIMES = st.integers(min_value=0, max_value=4).map(lambda hours: T0 + timedelta(hours=hours))
DOMAIN: dict[str, st.SearchStrategy[Any]] = {
    "id": INTS,
    "n": INTS,
    "s": TEXTS,
    "at": TIMES,
    "k": INTS,
}


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """One database and table per test function; examples replace the rows."""
    database = Database(database_url)
    await database.start()
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.aclose()


async def _load(db: Database, rows: list[dict[str, Any]]) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(delete(rows_table))
        if rows:
            await conn.execute(insert(rows_table), rows)


async def _ids(db: Database, spec: Mapping[str, Any] | None) -> set[int]:
    async with db.engine.connect() as conn:
        result = await conn.execute(select(rows_table.c.id).where(compile_filter(spec, FIELDS)))
        return {row.id for row in result}


# -- a plain Python reading of the same spec ----------------------------------------------


def _fold(text: str) -> str:
    return text.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"))


def _value(field: str, raw: Any) -> Any:
    return datetime.fromisoformat(raw) if field == "at" and isinstance(raw, str) else raw


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda x, v: x == v,
    "ne": lambda x, v: x != v,
    "lt": lambda x, v: x < v,
    "le": lambda x, v: x <= v,
    "gt": lambda x, v: x > v,
    "ge": lambda x, v: x >= v,
    "in": lambda x, v: x in v,
    "not_in": lambda x, v: x not in v,
    "between": lambda x, v: v[0] <= x <= v[1],
    "contains": lambda x, v: _fold(v) in _fold(x),
    "startswith": lambda x, v: _fold(x).startswith(_fold(v)),
    "endswith": lambda x, v: _fold(x).endswith(_fold(v)),
}


def _op_holds(op: str, x: Any, operand: Any, field: str) -> bool:
    if op == "is_null":
        return (x is None) is operand
    if operand is None:  # eq/ne null test for NULL
        return (x is None) if op == "eq" else (x is not None)
    if x is None:  # a comparison never matches a NULL field
        return False
    if isinstance(operand, list):
        operand = [_value(field, item) for item in operand]
    else:
        operand = _value(field, operand)
    return _COMPARE[op](x, operand)


def matches(spec: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    """The documented semantics, written the obvious way."""
    for key, value in spec.items():
        if key == "and" and not all(matches(part, row) for part in value):
            return False
        if key == "or" and not any(matches(part, row) for part in value):
            return False
        if key == "not" and matches(value, row):
            return False
        if key in FIELDS:
            conditions = value if isinstance(value, dict) else {"eq": value}
            if not all(_op_holds(op, row[key], arg, key) for op, arg in conditions.items()):
                return False
    return True


# -- strategies ----------------------------------------------------------------------------


def _as_json(field: str, value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(sorted(DOMAIN)))
    values = DOMAIN[field].map(lambda v: _as_json(field, v))
    ops = ["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "between", "is_null"]
    if field == "s":
        ops += ["contains", "startswith", "endswith"]
    op = draw(st.sampled_from(ops))
    if op == "is_null":
        operand: Any = draw(st.booleans())
    elif op in ("in", "not_in"):
        operand = draw(st.lists(values, max_size=3))
    elif op == "between":
        operand = draw(st.lists(values, min_size=2, max_size=2))
    elif op in ("eq", "ne"):
        operand = draw(st.one_of(values, st.none()))
    else:
        operand = draw(values)
    shorthand = op == "eq" and draw(st.booleans())
    return {field: operand if shorthand else {op: operand}}


specs = st.recursive(
    conditions(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda parts: {"and": parts}),
        st.lists(inner, min_size=1, max_size=3).map(lambda parts: {"or": parts}),
        inner.map(lambda part: {"not": part}),
        st.lists(inner, min_size=2, max_size=3).map(
            lambda parts: {k: v for part in parts for k, v in part.items()}
        ),
    ),
    max_leaves=6,
)


@st.composite
def tables(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=0, max_value=20))
    return [
        {
            "id": index,
            "n": draw(st.one_of(st.none(), INTS)),
            "s": draw(st.one_of(st.none(), TEXTS)),
            "at": draw(st.one_of(st.none(), TIMES)),
            "k": draw(INTS),
        }
        for index in range(-3, count - 3)
    ]


# -- properties ----------------------------------------------------------------------------


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=tables(), spec_list=st.lists(specs, min_size=1, max_size=6))
async def test_filters_select_exactly_what_python_selects(
    db: Database, rows: list[dict[str, Any]], spec_list: list[dict[str, Any]]
) -> None:
    """Every generated filter returns exactly the rows a plain Python evaluation returns."""
    await _load(db, rows)
    for spec in spec_list:
        expected = {row["id"] for row in rows if matches(spec, row)}

        assert await _ids(db, spec) == expected, spec


# -- fixed cases that read as documentation ------------------------------------------------

ROWS: list[dict[str, Any]] = [
    {"id": 1, "n": 1, "s": "50%_off", "at": T0, "k": 0},
    {"id": 2, "n": 2, "s": "500 off", "at": T0 + timedelta(hours=1), "k": 0},
    {"id": 3, "n": None, "s": "Été SALE", "at": None, "k": 1},
    {"id": 4, "n": 4, "s": "été sale", "at": T0 + timedelta(hours=2), "k": 1},
    {"id": 5, "n": 5, "s": None, "at": T0 + timedelta(hours=3), "k": 2},
    {"id": 6, "n": 6, "s": "back\\slash", "at": T0 + timedelta(hours=4), "k": 2},
]


DOCUMENTED: list[tuple[dict[str, Any], set[int]]] = [
    ({"s": {"contains": "%_"}}, {1}),
    ({"s": {"startswith": "50%"}}, {1}),
    ({"s": {"contains": "0_o"}}, set()),
    ({"s": {"contains": "\\"}}, {6}),
    ({"s": {"endswith": "SALE"}}, {3, 4}),
    ({"s": {"contains": "été"}}, {4}),
    ({"s": {"contains": "ÉT"}}, {3}),
    ({"s": {"contains": "ÉTÉ"}}, set()),
    ({"n": {"ne": 2}}, {1, 4, 5, 6}),
    ({"not": {"n": 2}}, {1, 3, 4, 5, 6}),
    ({"n": {"not_in": [1, 2]}}, {4, 5, 6}),
    ({"not": {"n": {"in": [1, 2]}}}, {3, 4, 5, 6}),
    ({"n": None}, {3}),
    ({"n": {"in": []}}, set()),
    ({"n": {"not_in": []}}, {1, 2, 4, 5, 6}),
    ({"not": {"n": {"not_in": []}}}, {3}),
    ({"at": {"gt": "2026-03-01T14:30:00+02:00"}}, {2, 4, 5, 6}),
    ({"at": {"between": ["2026-03-01T13:00:00Z", "2026-03-01T14:00:00Z"]}}, {2, 4}),
    ({"or": [{"k": 0}, {"s": {"contains": "sale"}}], "n": {"is_null": False}}, {1, 2, 4}),
]


async def test_documented_semantics_hold_on_both_databases(db: Database) -> None:
    """Escaped wildcards, ASCII-only case folding, two-valued NOT, UTC instants: same rows."""
    await _load(db, ROWS)

    found = [(spec, await _ids(db, spec)) for spec, _ in DOCUMENTED]

    assert found == DOCUMENTED


HOSTILE = [
    "' OR '1'='1",
    "1; DROP TABLE filter_rows; --",
    "x'); DELETE FROM filter_rows; --",
    "\\'; DROP TABLE filter_rows; --",
    "%' OR 1=1 --",
]


async def test_sql_in_values_is_data(db: Database) -> None:
    """Hostile strings are compared as text: nothing matches, nothing is dropped or deleted."""
    await _load(db, ROWS)
    for hostile in HOSTILE:
        for spec in (
            {"s": hostile},
            {"s": {"contains": hostile}},
            {"s": {"in": [hostile, "y"]}},
            {"or": [{"s": {"startswith": hostile}}, {"s": {"lt": hostile}, "n": {"gt": 100}}]},
        ):
            assert await _ids(db, spec) == set(), spec
    async with db.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(rows_table)) == len(ROWS)


CHOKING: list[tuple[dict[str, Any], str]] = [
    ({"s": "nul\x00"}, "filter.s"),
    ({"s": {"contains": "\ud800"}}, "filter.s"),
    ({"n": 2**31}, "filter.n"),
    ({"n": {"in": [1, -(2**31) - 1]}}, "filter.n"),
    ({"at": "2026-03-01T12:00:00"}, "filter.at"),
    ({"s; DROP TABLE filter_rows": 1}, "filter.s; DROP TABLE filter_rows"),
]


async def test_values_the_driver_would_choke_on_are_invalid_input(db: Database) -> None:
    """NUL bytes, lone surrogates, out-of-range ints and naive times never reach the driver."""
    await _load(db, ROWS)
    for spec, field in CHOKING:
        with pytest.raises(InvalidInputError) as caught:
            await _ids(db, spec)

        assert caught.value.field == field
    async with db.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(rows_table)) == len(ROWS)
