"""Stopping a relay in the middle of a batch loses no claimed event and keeps none held.

A real Redis of the test's own is frozen (SIGSTOP) so the relay's publish hangs exactly
there; on PostgreSQL the outbox's own advisory lock, held by the test, holds the mark.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import text

from corestone.db import Database
from corestone.events import EventBus, OutboxRelay
from corestone.events.brokers.redis_streams import RedisStreamsBroker
from corestone.events.outbox import _LOCK_KEY
from corestone.testing import RedisServer

from .brokers import fetch_until
from .conftest import create_tables, note, outbox_rows, registry


@pytest.fixture
async def broker(redis_server: RedisServer) -> AsyncIterator[RedisStreamsBroker]:
    redis = RedisStreamsBroker(redis_server.url, socket_timeout_seconds=30)
    await redis.start()
    await redis.ensure_group("corestone.events", "g")
    yield redis
    redis_server.thaw()
    await redis.aclose()


async def _until(condition: Callable[[], Any], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):  # bounded
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


async def _published(broker: RedisStreamsBroker, count: int) -> list[str]:
    return [d.id for d in await fetch_until(broker, "corestone.events", "g", count, rounds=10)]


async def test_a_relay_stopped_while_publishing_gives_its_batch_back_at_once(
    db: Database, broker: RedisStreamsBroker, redis_server: RedisServer
) -> None:
    """aclose while the broker hangs: after ``drain_seconds`` the pass is cancelled and its
    batch is released (no lease left to wait out), so another relay publishes it at once,
    with the same 30 s lease that would otherwise have held it."""
    events = [note("a"), note("b")]
    await EventBus(db, registry()).record(*events)
    relay = OutboxRelay(db, broker, listen=False, poll_seconds=0.05, drain_seconds=0.2)
    redis_server.freeze()
    await relay.start()

    async def leased() -> bool:
        return all(r.lease_owner == relay.owner for r in await outbox_rows(db))

    await _until(leased)
    await relay.aclose()

    rows = await outbox_rows(db)
    assert [(r.status, r.lease_owner) for r in rows] == [("pending", None)] * 2
    assert {r.last_error for r in rows} == {"the relay stopped while publishing"}
    redis_server.thaw()
    assert await OutboxRelay(db, broker, listen=False).run_once() == 2
    assert sorted(await _published(broker, 2)) == sorted(str(e.id) for e in events)


async def test_a_pass_cancelled_while_marking_finishes_the_mark_first(
    postgres_url: str, broker: RedisStreamsBroker, redis_server: RedisServer
) -> None:
    """The broker has the batch and the mark waits for the outbox lock when the pass is
    cancelled: the mark still completes (then the cancellation goes on), so the batch is
    sent, not left leased to be published a second time."""
    db = Database(postgres_url)
    await db.start()
    await create_tables(db)
    await EventBus(db, registry()).record(note("a"), note("b"))
    relay = OutboxRelay(db, broker, listen=False)
    redis_server.freeze()
    pass_ = asyncio.create_task(relay.run_once())

    async def leased() -> bool:
        return all(r.lease_owner == relay.owner for r in await outbox_rows(db))

    async def mark_waits() -> bool:
        async with db.transaction(read_only=True) as tx:
            waiting = await tx.session.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ))  # fmt: skip
            return bool(waiting.scalar_one())

    await _until(leased)
    async with db.engine.connect() as locker:
        await locker.execute(text(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})"))
        redis_server.thaw()
        await _until(mark_waits)
        pass_.cancel()
        await asyncio.sleep(0.2)
        assert not pass_.done()  # the mark is still waiting for the lock
        await locker.rollback()
    with pytest.raises(asyncio.CancelledError):
        await pass_

    rows = await outbox_rows(db)
    await db.aclose()
    assert [(r.status, r.lease_owner) for r in rows] == [("sent", None)] * 2
