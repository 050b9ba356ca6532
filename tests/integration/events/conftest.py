"""Fixtures for the events tests: a database with corestone's events tables, a registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from sqlalchemy import select, text

from corestone.db import Database, Transaction
from corestone.events import DomainEvent, EventPayload, EventRegistry
from corestone.events.inbox import DeadLetterRecord, InboxRecord
from corestone.events.outbox import EventOutboxRecord

OUTBOX: Any = EventOutboxRecord.__table__
TABLES = [OUTBOX, InboxRecord.__table__, DeadLetterRecord.__table__]


class NoteAdded(EventPayload):
    event_type: ClassVar[str] = "note.added"
    schema_version: ClassVar[int] = 1
    text: str
    n: int = 0


def registry() -> EventRegistry:
    events = EventRegistry()
    events.register(NoteAdded)
    return events


def note(aggregate: str | int = "1", n: int = 0, text: str = "hi") -> DomainEvent:
    return DomainEvent.create(
        NoteAdded(text=text, n=n), aggregate_type="note", aggregate_id=aggregate
    )


async def create_tables(db: Database) -> None:
    async with db.engine.begin() as conn:
        for table in TABLES:
            await conn.run_sync(table.create, checkfirst=True)


async def outbox_rows(db: Database) -> list[Any]:
    async with db.transaction(read_only=True) as tx:
        return list(await tx.session.execute(select(OUTBOX).order_by(OUTBOX.c.seq)))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.start()
    await create_tables(database)
    yield database
    await database.aclose()


async def create_effects_table(db: Database) -> None:
    """The table the consumer tests' handlers write one row per applied event into."""
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE effects (event_id VARCHAR(36) NOT NULL)"))


async def effects(db: Database) -> list[str]:
    """The ids of the events applied, sorted: an event applied twice shows twice."""
    async with db.transaction(read_only=True) as tx:
        rows = await tx.session.execute(text("SELECT event_id FROM effects"))
        return sorted(r.event_id for r in rows)


async def apply_effect(event: DomainEvent, tx: Transaction) -> None:
    """A handler: one effect row for ``event``, in the consumer's transaction."""
    await tx.session.execute(
        text("INSERT INTO effects (event_id) VALUES (:e)"), {"e": str(event.id)}
    )
