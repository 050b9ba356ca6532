"""The events suite's fixtures: its own database, an event type, and brokers it cleans up.

- :func:`events_database` creates ``bench_events_<random>`` on the local PostgreSQL with
  corestone's three events tables and a caller's table (the "change" an event announces),
  yields a started :class:`~corestone.db.Database`, and drops the database (also on error).
- :func:`open_broker` builds corestone's broker for ``kind`` with names of the run's own
  (a Redis key prefix; topics ``bench.events.<random>``), and :func:`close_broker` deletes
  every stream, exchange and queue it made. A broker whose server does not answer is
  reported as missing; the suite leaves its rows out and its checks say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import asyncpg
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.engine import make_url

from corestone.db import Database
from corestone.events import DomainEvent, EventPayload, EventRegistry
from corestone.events.brokers.base import Broker
from corestone.events.inbox import DeadLetterRecord, InboxRecord
from corestone.events.outbox import EventOutboxRecord

__all__ = [
    "BROKER_KINDS",
    "CHANGES",
    "RUN_ID",
    "TaskNoted",
    "broker_url",
    "checkpoint",
    "close_broker",
    "event",
    "events_database",
    "open_broker",
    "registry",
    "reset_events",
    "topic",
]

SERVER_URL = os.environ.get(
    "CORESTONE_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
BROKER_KINDS = ("redis", "nats", "rabbitmq")
RUN_ID = secrets.token_hex(4)
"""Names every database, key prefix, stream and exchange of this run."""

_URLS = {
    "redis": os.environ.get("CORESTONE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "nats": os.environ.get("CORESTONE_TEST_NATS_URL", "nats://127.0.0.1:4222"),
    "rabbitmq": os.environ.get("CORESTONE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
}

_caller = MetaData()
CHANGES = Table(
    "bench_events_changes",
    _caller,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
_TABLES: list[Any] = [
    EventOutboxRecord.__table__,
    InboxRecord.__table__,
    DeadLetterRecord.__table__,
    CHANGES,
]


class TaskNoted(EventPayload):
    """A small event, shaped like taskboard's: which task, a title, a status."""

    event_type: ClassVar[str] = "bench.task_noted"
    schema_version: ClassVar[int] = 1
    task_id: int
    title: str
    status: str


def registry() -> EventRegistry:
    made = EventRegistry()
    made.register(TaskNoted)
    return made


def event(i: int, *, aggregates: int = 64) -> DomainEvent:
    """Event ``i``, about one of ``aggregates`` tasks (so per-aggregate ordering is exercised)."""
    return DomainEvent.create(
        TaskNoted(task_id=i, title=f"Task {i}: write the quarterly report", status="open"),
        aggregate_type="task",
        aggregate_id=i % aggregates,
        workspace_id="bench",
        actor="bench",
    )


def topic(label: str) -> str:
    return f"bench.events.{RUN_ID}.{label}"


def broker_url(kind: str) -> str:
    return _URLS[kind]


@contextlib.asynccontextmanager
async def events_database() -> AsyncIterator[Database]:
    """Create ``bench_events_<random>`` with the tables, yield a started Database, drop it."""
    name = f"bench_events_{RUN_ID}"
    server = make_url(SERVER_URL)
    admin = await asyncpg.connect(server.set(drivername="postgresql").render_as_string(False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        db = Database(server.set(database=name).render_as_string(False))
        await db.start()
        try:
            async with db.engine.begin() as conn:
                for table in _TABLES:
                    await conn.run_sync(table.create)
            yield db
        finally:
            await db.aclose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def reset_events(db: Database) -> None:
    """Empty the outbox, the inbox and the dead letters (between parts of the run)."""
    names = ", ".join(table.name for table in _TABLES[:3])
    async with db.transaction() as tx:
        await tx.session.execute(text(f"TRUNCATE {names}"))


async def checkpoint(db: Database) -> None:
    """Flush PostgreSQL's dirty pages now (a no-op elsewhere).

    The relay part writes some 80,000 rows; the checkpoint they call for otherwise lands
    in the first latency part and slows its commits (the first broker timed, Redis, read
    p99 715 ms in a full run and 66 ms alone).
    """
    if db.engine.dialect.name == "postgresql":
        async with db.engine.connect() as conn:
            await conn.execute(text("CHECKPOINT"))


async def open_broker(kind: str, **options: Any) -> Broker | None:
    """corestone's broker for ``kind``, started and answering; None if its server is away."""
    broker: Any
    url = _URLS[kind]
    if kind == "redis":
        from corestone.events.brokers.redis_streams import RedisStreamsBroker

        broker = RedisStreamsBroker(url, key_prefix=f"bench:events:{RUN_ID}:", **options)
    elif kind == "nats":
        from corestone.events.brokers.nats_jetstream import NatsJetStreamBroker

        broker = NatsJetStreamBroker(url, **options)
    else:
        from corestone.events.brokers.rabbitmq import RabbitMQBroker

        broker = RabbitMQBroker(url, **options)
    try:
        await asyncio.wait_for(broker.start(), 10)
        await asyncio.wait_for(broker.ping(), 10)
    except Exception:  # noqa: BLE001 - any failure means "not here": the rows are left out
        with contextlib.suppress(Exception):
            await broker.aclose()
        return None
    return broker  # type: ignore[no-any-return]


async def close_broker(broker: Any, topics: list[str], groups: list[str]) -> None:
    """Delete the run's streams / exchanges / queues on the server, then disconnect."""
    try:
        for name in topics:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(broker.delete_topic(name, groups), 30)
    finally:
        with contextlib.suppress(Exception):
            await broker.aclose()
