"""Fixtures for the outbox tests: a database with corestone's email tables, time by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from corestone.db import Database, utc_now
from corestone.email import EmailMessage, EmailSender, EmailService, ProviderRoute
from corestone.email.outbox import EmailEventRecord, EmailOutboxRecord, EmailSuppressionRecord
from corestone.observability.metrics import Metrics
from corestone.resilience import BreakerConfig, BreakerRegistry
from corestone.testing.clock import ManualClock

from .fakes import FakeProvider

OUTBOX: Any = EmailOutboxRecord.__table__
EVENTS: Any = EmailEventRecord.__table__
TABLES = [OUTBOX, EVENTS, EmailSuppressionRecord.__table__]


class Time:
    """The wall clock (outbox) and the monotonic clock (breakers), moved together by hand."""

    def __init__(self) -> None:
        self.monotonic = ManualClock()
        self.offset = timedelta()

    def wall(self) -> datetime:
        return utc_now() + self.offset

    def advance(self, seconds: float) -> None:
        self.monotonic.advance(seconds)
        self.offset += timedelta(seconds=seconds)


async def create_tables(db: Database) -> None:
    async with db.engine.begin() as conn:
        for table in TABLES:
            await conn.run_sync(table.create, checkfirst=True)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.start()
    await create_tables(database)
    yield database
    await database.aclose()


@pytest.fixture
def time() -> Time:
    return Time()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def breakers(time: Time) -> BreakerRegistry:
    """Breakers that open after two failed calls out of two and stay open 30 s."""
    config = BreakerConfig(window_size=2, minimum_calls=2, wait_in_open_seconds=30.0)
    return BreakerRegistry(config, clock=time.monotonic)


def make_sender(
    db: Database,
    providers: Sequence[FakeProvider],
    time: Time,
    *,
    metrics: Metrics | None = None,
    registry: BreakerRegistry | None = None,
    **options: Any,
) -> EmailSender:
    settings: dict[str, Any] = {
        "tries_per_provider": 2,
        "retry_wait_seconds": 0.001,
        "max_retry_wait_seconds": 0.01,
        "backoff_initial_seconds": 10.0,
        "backoff_max_seconds": 60.0,
        "lease_seconds": 30.0,
        "poll_seconds": 0.02,
        **options,
    }
    return EmailSender(
        db,
        [ProviderRoute(p) for p in providers],
        breakers=registry if registry is not None else breakers(time),
        metrics=metrics,
        now=time.wall,
        **settings,
    )


def message(to: str | list[str] = "ada@example.com", **fields: Any) -> EmailMessage:
    return EmailMessage.build(
        sender="app@example.com", to=to, subject=fields.pop("subject", "Hello"),
        text=fields.pop("text", "Hi there"), **fields,
    )  # fmt: skip


async def queue(db: Database, time: Time, count: int = 1, **fields: Any) -> list[str]:
    service = EmailService(db, now=time.wall)
    return [await service.send(message(**fields)) for _ in range(count)]


async def row(db: Database, message_id: str) -> Any:
    async with db.transaction(read_only=True) as tx:
        return (await tx.session.execute(select(OUTBOX).where(OUTBOX.c.id == message_id))).one()


async def statuses(db: Database) -> dict[str, str]:
    async with db.transaction(read_only=True) as tx:
        rows = await tx.session.execute(select(OUTBOX.c.id, OUTBOX.c.status))
        return {r.id: r.status for r in rows}


async def history(db: Database, message_id: str) -> list[tuple[str, str | None, str | None]]:
    """(status, provider, detail) of each event of one message, in order."""
    async with db.transaction(read_only=True) as tx:
        rows = await tx.session.execute(
            select(EVENTS.c.status, EVENTS.c.provider, EVENTS.c.detail)
            .where(EVENTS.c.message_id == message_id)
            .order_by(EVENTS.c.id)
        )
        return [(r.status, r.provider, r.detail) for r in rows]
