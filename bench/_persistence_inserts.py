"""Bulk insert: the same rows into an empty table by six paths, each committed.

Each timing runs from the first statement to the end of COMMIT, so every path pays for
its own round trips and its own object building (the ORM paths must build model
instances; that is the price of their API). The table is truncated, identity restarted,
before every attempt, and the row count is checked after it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, insert, select

from bench._persistence_setup import (
    WORKSPACE,
    BenchDatabase,
    BenchTask,
    PeerTaskRepository,
    TaskRepository,
    copy_columns,
    copy_records,
)
from corestone.db import Base

__all__ = ["INSERTERS", "measure_insert", "measure_upsert"]

Rows = list[dict[str, Any]]
Inserter = Callable[[BenchDatabase, Rows], Awaitable[None]]
_TABLE = Base.metadata.tables["bench_tasks"]
_COLUMN_LIST = ", ".join(copy_columns())
_PLACEHOLDERS = ", ".join(f"${i}" for i in range(1, len(copy_columns()) + 1))


async def _asyncpg_copy(db: BenchDatabase, rows: Rows) -> None:
    conn = await db.raw()
    try:
        records = copy_records(rows)
        async with conn.transaction():
            await conn.copy_records_to_table("bench_tasks", records=records, columns=copy_columns())
    finally:
        await conn.close()


async def _asyncpg_executemany(db: BenchDatabase, rows: Rows) -> None:
    conn = await db.raw()
    try:
        records = copy_records(rows)
        async with conn.transaction():
            await conn.executemany(
                f"INSERT INTO bench_tasks ({_COLUMN_LIST}) VALUES ({_PLACEHOLDERS})", records
            )
    finally:
        await conn.close()


async def _core_insert(db: BenchDatabase, rows: Rows) -> None:
    async with db.session() as session, session.begin():
        await session.execute(insert(_TABLE), rows)


async def _orm_add_all(db: BenchDatabase, rows: Rows) -> None:
    async with db.session() as session, session.begin():
        session.add_all([BenchTask(**row) for row in rows])
        await session.flush()


async def _aa_add_many(db: BenchDatabase, rows: Rows) -> None:
    async with db.session() as session, session.begin():
        await PeerTaskRepository(session=session).add_many([BenchTask(**row) for row in rows])


async def _corestone_create_many(db: BenchDatabase, rows: Rows) -> None:
    async with db.session() as session, session.begin():
        ids = await TaskRepository(session, workspace=WORKSPACE).create_many(rows)
        assert len(ids) == len(rows)


INSERTERS: dict[str, tuple[str, Inserter]] = {
    "asyncpg_copy": ("asyncpg copy_records_to_table (floor, no ids)", _asyncpg_copy),
    "asyncpg_executemany": ("asyncpg executemany", _asyncpg_executemany),
    "sqlalchemy_core_insert": ("SQLAlchemy Core insert(), list of dicts", _core_insert),
    "sqlalchemy_orm_add_all": ("SQLAlchemy ORM add_all + flush", _orm_add_all),
    "advanced_alchemy_add_many": ("advanced-alchemy add_many", _aa_add_many),
    "corestone_create_many": ("corestone Repository.create_many (ids)", _corestone_create_many),
}


async def _count(db: BenchDatabase) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(BenchTask)) or 0)


async def measure_insert(db: BenchDatabase, inserter: Inserter, rows: Rows, rounds: int) -> float:
    """Best seconds over ``rounds`` inserts of ``rows`` into an emptied table."""
    best = float("inf")
    for _ in range(rounds):
        await db.truncate()
        started = time.perf_counter()
        await inserter(db, rows)
        best = min(best, time.perf_counter() - started)
        found = await _count(db)
        if found != len(rows):
            raise AssertionError(f"{inserter.__name__} left {found} rows, not {len(rows)}")
    return best


async def measure_upsert(db: BenchDatabase, rows: Rows, rounds: int) -> float:
    """Best seconds of ``upsert_many`` over a full table: every row conflicts and updates.

    The rows carry the ids ``create_many`` gave them (ON CONFLICT on the id), with a new
    status, so each one takes the DO UPDATE path, the dearer half of an upsert.
    """
    best = float("inf")
    for attempt in range(rounds):
        await db.truncate()
        async with db.session() as session, session.begin():
            ids = await TaskRepository(session, workspace=WORKSPACE).create_many(rows)
        changed = [
            {**row, "id": id_, "status": "done" if attempt % 2 else "blocked"}
            for row, id_ in zip(rows, ids, strict=True)
        ]
        started = time.perf_counter()
        async with db.session() as session, session.begin():
            written = await TaskRepository(session, workspace=WORKSPACE).upsert_many(changed)
        best = min(best, time.perf_counter() - started)
        if written != len(rows) or await _count(db) != len(rows):
            raise AssertionError("upsert_many did not update every row in place")
    return best
