"""A consumer applies a fetch in one transaction, each event in a savepoint of its own."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event as sa_event

from corestone.db import Database, Transaction
from corestone.events import DomainEvent, EventConsumer, MemoryBroker
from corestone.events.brokers import OutgoingMessage

from .conftest import apply_effect, create_effects_table, effects, note, registry

TOPIC = "corestone.events"


def _consumer(db: Database, broker: MemoryBroker, handler: Any, **options: Any) -> EventConsumer:
    settings: dict[str, Any] = {"group": "effects", "wait_seconds": 0, "max_attempts": 3}
    settings.update(options)
    return EventConsumer(db, broker, registry(), handlers={"note.added": handler}, **settings)


async def _publish(broker: MemoryBroker, *events: DomainEvent) -> None:
    await broker.publish(
        [OutgoingMessage(id=str(e.id), topic=TOPIC, body=e.to_json()) for e in events]
    )


async def test_a_fetched_batch_commits_once(db: Database) -> None:
    """Twenty events in one fetch: twenty effects, twenty acks, one commit (one
    transaction per event held a consumer under 200 events a second)."""
    await create_effects_table(db)
    broker = MemoryBroker()
    events = [note(str(n), n) for n in range(20)]
    await _publish(broker, *events)
    consumer = _consumer(db, broker, apply_effect, batch=50)
    commits: list[int] = []
    sa_event.listen(db.engine.sync_engine, "commit", lambda _conn: commits.append(1))

    assert await consumer.run_once() == 20
    assert len(commits) == 1

    assert await effects(db) == sorted(str(e.id) for e in events)
    assert broker.pending(TOPIC, "effects") == 0


async def test_a_failing_handler_rolls_back_only_its_own_savepoint(db: Database) -> None:
    """The third of five handlers writes, then raises: its write is undone and it is
    naked for a retry; the other four commit and are acked."""
    await create_effects_table(db)
    broker = MemoryBroker()
    events = [note(str(n), n) for n in range(5)]
    await _publish(broker, *events)

    async def third_fails(event: DomainEvent, tx: Transaction) -> None:
        await apply_effect(event, tx)
        if event.id == events[2].id:
            raise RuntimeError("broken for this one")

    consumer = _consumer(db, broker, third_fails)
    deliveries = await broker.fetch(TOPIC, "effects", consumer="c", limit=10, wait_seconds=0)

    outcomes = await consumer.handle_batch(deliveries)

    assert outcomes == ["handled", "handled", "retried", "handled", "handled"]
    assert await effects(db) == sorted(str(e.id) for i, e in enumerate(events) if i != 2)
    assert broker.pending(TOPIC, "effects") == 1


async def test_a_duplicate_inside_one_batch_has_one_effect(db: Database) -> None:
    """The same event twice in one fetch (a republish landed beside the first): the second
    finds the first's inbox row, uncommitted but in the same transaction."""
    await create_effects_table(db)
    broker = MemoryBroker(dedupe_window_seconds=0)
    event = note()
    await _publish(broker, event)
    await _publish(broker, event)
    consumer = _consumer(db, broker, apply_effect)
    deliveries = await broker.fetch(TOPIC, "effects", consumer="c", limit=10, wait_seconds=0)

    assert await consumer.handle_batch(deliveries) == ["handled", "duplicate"]
    assert await effects(db) == [str(event.id)]


async def test_a_poison_event_that_breaks_the_transaction_fails_alone(db: Database) -> None:
    """A handler that leaves the whole transaction unable to commit (here: it kills its
    connection) cannot be told apart inside the batch: the batch is applied again one
    event per transaction, so the poison one is retried alone and the others commit —
    instead of the whole batch failing at every delivery for ever."""
    await create_effects_table(db)
    broker = MemoryBroker()
    events = [note(str(n), n) for n in range(4)]
    await _publish(broker, *events)

    async def poison_kills_the_connection(event: DomainEvent, tx: Transaction) -> None:
        await apply_effect(event, tx)
        if event.id == events[1].id:
            connection = await tx.session.connection()
            await connection.invalidate()

    consumer = _consumer(db, broker, poison_kills_the_connection)
    deliveries = await broker.fetch(TOPIC, "effects", consumer="c", limit=10, wait_seconds=0)

    outcomes = await consumer.handle_batch(deliveries)

    assert outcomes == ["handled", "retried", "handled", "handled"]
    assert await effects(db) == sorted(str(e.id) for i, e in enumerate(events) if i != 1)
    assert broker.pending(TOPIC, "effects") == 1
