"""Helpers shared by the saga tests: a database with the saga table, a call trail, stuck rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, delete, insert, select, update

from corestone.db import Database, utc_now
from corestone.resilience import Retry
from corestone.sagas import (
    Saga,
    SagaOrchestrator,
    SagaRecord,
    SagaRegistry,
    SagaState,
    StepContext,
)
from corestone.sagas.store import SagaStore

__all__ = [
    "FAST",
    "ROWS",
    "SAGAS",
    "Trail",
    "make_stuck",
    "open_db",
    "orchestrator",
    "row_keys",
]

ROWS = Table("saga_test_rows", MetaData(), Column("key", String(100), primary_key=True))
FAST = Retry(attempts=3, initial_wait_seconds=0.001, max_wait_seconds=0.01, deadline_seconds=5.0)
SAGAS: Any = SagaRecord.__table__


@asynccontextmanager
async def open_db(database_url: str) -> AsyncIterator[Database]:
    """A started database with the saga table and the test rows table."""
    database = Database(database_url)
    await database.start()
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(SAGAS.create)
            await conn.run_sync(ROWS.create)
        yield database
    finally:
        await database.aclose()


class Trail:
    """Records every action and compensation call, with the context it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.contexts: list[StepContext] = []

    def action(self, key: str, *, fail: BaseException | None = None, row: bool = False) -> Any:
        async def run(ctx: StepContext) -> dict[str, Any]:
            self.calls.append(("do", key))
            self.contexts.append(ctx)
            if row:
                await ctx.session.execute(insert(ROWS).values(key=ctx.idempotency_key))
            if fail is not None:
                raise fail
            return {"step": key, "seen": sorted(ctx.results)}

        return run

    def undo(self, key: str, *, fail: BaseException | None = None, row: bool = False) -> Any:
        async def run(ctx: StepContext) -> None:
            self.calls.append(("undo", key))
            self.contexts.append(ctx)
            if fail is not None:
                raise fail
            if row:
                await ctx.session.execute(delete(ROWS).where(ROWS.c.key == ctx.action_key))

        return run


async def row_keys(db: Database) -> list[str]:
    async with db.transaction(read_only=True) as tx:
        return list(await tx.session.scalars(select(ROWS.c.key).order_by(ROWS.c.key)))


def orchestrator(db: Database, *sagas: Saga, **options: Any) -> SagaOrchestrator:
    return SagaOrchestrator(db, SagaRegistry(sagas), **options)


async def make_stuck(
    db: Database,
    saga: Saga | str,
    *,
    attempts: int = 1,
    payload: dict[str, Any] | None = None,
    **values: Any,
) -> SagaState:
    """A saga row as a process that died would leave it; ``values`` override its columns."""
    name = saga.name if isinstance(saga, Saga) else saga
    async with db.transaction() as tx:
        state = await SagaStore(30).insert(
            tx.session, saga_type=name, payload=payload or {}, owner="dead-process"
        )
        await tx.session.execute(
            update(SAGAS)
            .where(SAGAS.c.id == state.id)
            .values(locked_until=utc_now() - timedelta(seconds=5), attempts=attempts, **values)
        )
    return state
