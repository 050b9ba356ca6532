"""add_events: the bus, relay, broker and consumers an Infrastructure runs, on each database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import text

from corestone import ConfigurationError, Infrastructure, Settings
from corestone.db import Database, Transaction
from corestone.events import (
    DomainEvent,
    EventBus,
    EventPayload,
    Events,
    MemoryBroker,
    add_events,
)
from corestone.events.brokers.guarded import GuardedBroker

from .conftest import create_tables, note, outbox_rows, registry


class NoteRemoved(EventPayload):
    event_type: ClassVar[str] = "note.removed"


def _infra(database_url: str, **settings: object) -> Infrastructure:
    return Infrastructure(Settings(database_url=database_url, env="test", **settings))  # type: ignore[arg-type]


async def _prepared(database_url: str) -> None:
    db = Database(database_url)
    await db.start()
    try:
        await create_tables(db)
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE effects (event_id VARCHAR(36) NOT NULL)"))
    finally:
        await db.aclose()


async def _effects(db: Database, count: int) -> list[str]:
    """The ids in ``effects`` once there are ``count`` (bounded: 10 s)."""
    for _ in range(200):
        async with db.transaction(read_only=True) as tx:
            found = [r.event_id for r in await tx.session.execute(text("SELECT * FROM effects"))]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(found)} effects, wanted {count}")


async def _apply(event: DomainEvent, tx: Transaction) -> None:
    await tx.session.execute(
        text("INSERT INTO effects (event_id) VALUES (:e)"), {"e": str(event.id)}
    )


async def test_infra_events_before_add_events_names_the_call(database_url: str) -> None:
    """Using ``infra.events`` before wiring is a ConfigurationError that says what to call."""
    with pytest.raises(ConfigurationError, match=r"add_events\(infra, registry\)"):
        _infra(database_url).events  # noqa: B018 - the property is the test


async def test_a_recorded_event_reaches_a_consumer_through_the_memory_broker(
    database_url: str,
) -> None:
    """Without CORESTONE_BROKER_URL: a memory broker behind ``broker:memory``, a relay the
    commit wakes, a consumer as a component; readiness shows all three, and one event
    recorded in a transaction is applied once."""
    await _prepared(database_url)
    infra = _infra(database_url)
    events = add_events(infra, registry())
    consumer = events.consumer("effects", {"note.added": _apply}, wait_seconds=0.1)
    assert infra.events is events
    assert isinstance(infra.broker, GuardedBroker)
    assert isinstance(infra.broker.inner, MemoryBroker)
    assert infra.broker.breaker is infra.breakers.get("broker:memory")
    async with infra:
        event = note()
        async with infra.db.transaction() as tx:
            await infra.events.record(event, transaction=tx)
        assert await _effects(infra.db, 1) == [str(event.id)]
        report = await infra.health.ready()
        services = infra.services
        async with services.scope() as scope:
            assert await scope.aget(EventBus) is events.bus
            assert await scope.aget(Events) is events
    assert {"broker", "events-relay", consumer.name} <= {k.rsplit(":", 1)[0] for k in report.checks}
    assert report.status.value == "pass", report.as_json()


async def test_a_process_that_only_records_leaves_the_events_to_a_relay_elsewhere(
    database_url: str,
) -> None:
    """``run_relay=False``: the event waits in the outbox (its backlog in readiness), the
    process's broker gets nothing; another process's relay and consumer apply it."""
    await _prepared(database_url)
    recorder = _infra(database_url)
    events = add_events(recorder, registry(), run_relay=False)
    assert isinstance(recorder.broker, GuardedBroker)
    memory = recorder.broker.inner
    assert isinstance(memory, MemoryBroker)
    async with recorder:
        event = note()
        await recorder.events.record(event)
        await asyncio.sleep(0.3)  # a relay here would have published it by now
        report = await recorder.health.ready()
        assert memory.published == 0
        assert [row.status for row in await outbox_rows(recorder.db)] == ["pending"]
    assert report.checks["events-relay:responseTime"][0]["observedValue"] == 1
    assert "events-relay" not in [c.name for c in recorder._started]
    assert events.relaying is False

    worker = _infra(database_url)
    add_events(worker, registry()).consumer("effects", {"note.added": _apply}, wait_seconds=0.1)
    async with worker:
        assert await _effects(worker.db, 1) == [str(event.id)]


async def test_the_configured_broker_is_the_one_events_use(tmp_path: Path) -> None:
    """With CORESTONE_BROKER_URL the relay and consumers use ``infra.broker``; no second one."""
    infra = _infra(f"sqlite+aiosqlite:///{tmp_path}/e.db", broker_url="memory://")
    configured = infra.broker
    events = add_events(infra, registry())
    assert events.broker is configured
    assert infra.broker is configured


async def test_wiring_mistakes_are_refused_at_once(tmp_path: Path) -> None:
    """A second add_events, a consumer whose types span topics, or one with no handlers."""
    infra = _infra(f"sqlite+aiosqlite:///{tmp_path}/e.db")
    types = registry()
    types.register(NoteRemoved)
    events = add_events(infra, types, topic_for=lambda t: f"topic-of-{t}")
    with pytest.raises(ValueError, match="add_events twice"):
        add_events(infra, registry())
    with pytest.raises(ValueError, match="no handlers"):
        events.consumer("g", {})
    with pytest.raises(ValueError, match="one consumer per topic"):
        events.consumer("g", {"note.added": _apply, "note.removed": _apply})
    one = events.consumer("g", {"note.added": _apply})
    two = events.consumer("g", {"note.added": _apply}, topic="elsewhere")
    assert (one.topic, two.topic) == ("topic-of-note.added", "elsewhere")
    assert two.name == "events-consumer:g@elsewhere"
