"""The relay's LISTEN connection dropping on real PostgreSQL: it notices, polls, listens again.

A terminated backend is what a PostgreSQL restart or failover does to every connection:
the server closes it, and asyncpg reports the connection lost at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from corestone.db import Database
from corestone.events import EventBus, MemoryBroker, OutboxRelay

from .brokers import fetch_until
from .conftest import create_tables, note, registry


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[Database]:
    database = Database(postgres_url)
    await database.start()
    await create_tables(database)
    yield database
    await database.aclose()


async def _until(condition: Any, seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.02)):  # bounded
        if condition():
            return True
        await asyncio.sleep(0.02)
    return bool(condition())


async def test_a_killed_listen_connection_is_noticed_and_replaced_and_notify_wakes_again(
    db: Database,
) -> None:
    """pg_terminate_backend the LISTEN connection: health warns at once; after the retry
    delay the relay LISTENs again, publishes at once what was committed while it was deaf,
    and a later commit wakes it by NOTIFY — all well within the 30 s poll, so polling
    cannot be what published them. (The first retry comes 1 to 2 s after the loss: the
    deaf-time checks take milliseconds.)"""
    broker = MemoryBroker()
    relay = OutboxRelay(db, broker, poll_seconds=30, listen_retry_initial_seconds=2.0)
    bus = EventBus(db, registry())  # no on_recorded: only NOTIFY (or a poll) wakes the relay
    deaf, later = note("1", 1), note("1", 2)

    async def published(count: int) -> list[str]:
        """The next ``count`` events the relay publishes, waiting up to 5 s."""
        found = await fetch_until(broker, "corestone.events", "g", count, rounds=10)
        return [d.id for d in found]

    await relay.start()
    try:
        assert relay.listening
        await bus.record(note("0"))
        assert len(await published(1)) == 1
        async with db.transaction() as tx:
            killed = await tx.session.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
            ))  # fmt: skip
            assert killed.scalars().all() == [True]

        assert await _until(lambda: not relay.listening)
        health = await relay.check()
        assert (health.status, health.output) == (
            "warn", "not listening for commits (reconnecting); polling every 30s",
        )  # fmt: skip
        await bus.record(deaf)  # its NOTIFY reaches nobody

        assert await _until(lambda: relay.listening)
        assert await published(1) == [str(deaf.id)]  # the pass run on listening again
        assert (await relay.check()).status == "pass"
        await bus.record(later)
        assert await published(1) == [str(later.id)]  # woken by NOTIFY
    finally:
        await relay.aclose()
