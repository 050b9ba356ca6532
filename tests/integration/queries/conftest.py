"""Fixtures for the plan and advisor tests: an engine on a seeded parent/child schema.

``child`` has 20,000 rows (large for the analysis defaults), ``parent`` 2,000; ``child.a``
and ``child.b`` are unindexed, ``child.parent_id`` is a foreign key without an index,
``child.x`` and ``child.y`` are perfectly correlated (the planner cannot know).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

CHILD_ROWS = 20_000
PARENT_ROWS = 2_000

_SCHEMA = [
    "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id),"
    " a INTEGER, b TEXT, x INTEGER, y INTEGER, deleted_at TEXT)",
]


def _numbers(n: int, dialect: str) -> str:
    if dialect == "postgresql":
        return f"(SELECT g FROM generate_series(1, {n}) g) AS s"
    return (
        f"(WITH RECURSIVE r(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM r WHERE g < {n})"
        " SELECT g FROM r) AS s"
    )


async def seed(engine: AsyncEngine) -> None:
    """Create and fill the parent/child tables, with fresh planner statistics."""
    dialect = engine.dialect.name
    async with engine.begin() as conn:
        for statement in _SCHEMA:
            await conn.exec_driver_sql(statement)
        await conn.exec_driver_sql(
            f"INSERT INTO parent SELECT g, 'p' || g FROM {_numbers(PARENT_ROWS, dialect)}"
        )
        await conn.exec_driver_sql(
            "INSERT INTO child SELECT g, 1 + g % 2000, g % 1000, 'b' || g, g % 100, g % 100,"
            f" CASE WHEN g % 10 = 0 THEN 'gone' END FROM {_numbers(CHILD_ROWS, dialect)}"
        )
    async with engine.connect() as conn:
        await conn.exec_driver_sql("ANALYZE")
        await conn.commit()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a seeded database (SQLite and PostgreSQL)."""
    made = create_async_engine(database_url)
    await seed(made)
    yield made
    await made.dispose()


@pytest.fixture
async def pg_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a seeded PostgreSQL database with hypopg installed."""
    made = create_async_engine(postgres_url)
    await seed(made)
    async with made.begin() as conn:
        await conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS hypopg")
    yield made
    await made.dispose()
