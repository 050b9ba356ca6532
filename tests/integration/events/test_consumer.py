"""Consumers: each event's effects once despite redelivery, retries, dead letters, hostile input."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from corestone.db import Database, Transaction
from corestone.errors import InvalidInputError
from corestone.events import DomainEvent, EventBus, EventConsumer, MemoryBroker, OutboxRelay
from corestone.events.brokers import OutgoingMessage
from corestone.testing import ManualClock

from .conftest import apply_effect, create_effects_table, effects, note, registry

TOPIC = "corestone.events"


def _consumer(db: Database, broker: MemoryBroker, **options: Any) -> EventConsumer:
    settings: dict[str, Any] = {"group": "effects", "wait_seconds": 0, "max_attempts": 3}
    settings.update(options)
    return EventConsumer(db, broker, registry(), **settings)


async def _publish(broker: MemoryBroker, *events: DomainEvent) -> None:
    await broker.publish(
        [OutgoingMessage(id=str(e.id), topic=TOPIC, body=e.to_json()) for e in events]
    )


async def test_a_redelivered_event_has_no_second_effect(db: Database) -> None:
    """Handled, then delivered again (the relay republished, an ack was lost): one effect."""
    await create_effects_table(db)
    clock = ManualClock()
    broker = MemoryBroker(clock=clock, ack_wait_seconds=5, dedupe_window_seconds=0)
    consumer = _consumer(db, broker, handlers={"note.added": apply_effect})
    event = note()
    await _publish(broker, event)
    [delivery] = await broker.fetch(TOPIC, "effects", consumer="x", limit=1, wait_seconds=0)
    async with db.transaction() as tx:  # a consumer that committed, then died before its ack
        await consumer.store.claim(tx.session, "effects", str(event.id))
        await apply_effect(event, tx)
    clock.advance(6)
    await _publish(broker, event)  # and the relay published it again too

    await consumer.run_once()

    assert await effects(db) == [str(event.id)]
    assert delivery.attempt == 1
    assert broker.pending(TOPIC, "effects") == 0


async def test_end_to_end_each_committed_event_is_applied_once(db: Database) -> None:
    """Bus, outbox, relay (publishing twice), broker and consumer: one effect per event."""
    await create_effects_table(db)
    broker = MemoryBroker(dedupe_window_seconds=0)
    bus = EventBus(db, registry())
    events = [note(str(n % 3), n) for n in range(10)]
    await bus.record(*events)
    relay = OutboxRelay(db, broker, listen=False)
    await relay.run_once()
    await _publish(broker, *events[:4])  # a republish, as after a crash before the mark
    consumer = _consumer(db, broker, handlers={"note.added": apply_effect})

    while await consumer.run_once():
        pass

    assert await effects(db) == sorted(str(e.id) for e in events)


async def test_a_failing_handler_is_retried_with_backoff_then_dead_lettered(db: Database) -> None:
    """Each failure rolls back and comes back later; the N-th goes to the dead letters."""
    await create_effects_table(db)
    clock = ManualClock()
    broker = MemoryBroker(clock=clock)
    calls: list[int] = []

    async def failing(event: DomainEvent, tx: Transaction) -> None:
        calls.append(1)
        await apply_effect(event, tx)
        raise RuntimeError("the handler is broken")

    consumer = _consumer(db, broker, handlers={"note.added": failing}, backoff_initial_seconds=10)
    event = note()
    await _publish(broker, event)

    outcomes = [await consumer.handle(d) for d in await broker.fetch(
        TOPIC, "effects", consumer="c", limit=1, wait_seconds=0)]  # fmt: skip
    assert outcomes == ["retried"]
    assert await consumer.run_once() == 0  # backing off
    for _ in range(2):
        clock.advance(20)
        await consumer.run_once()

    assert len(calls) == 3
    assert await effects(db) == []
    [letter] = await consumer.dead_letters()
    assert (letter.event_id, letter.type, letter.attempts) == (str(event.id), "note.added", 3)
    assert "the handler is broken" in letter.reason
    clock.advance(1000)
    assert await consumer.run_once() == 0  # acked: gone from the broker


async def test_a_dead_letter_is_replayed_once_fixed_or_dropped(db: Database) -> None:
    """Replay applies it (through the inbox) and removes it; drop removes it unapplied."""
    await create_effects_table(db)
    broker = MemoryBroker()
    broken = True

    async def sometimes(event: DomainEvent, tx: Transaction) -> None:
        if broken:
            raise RuntimeError("not yet")
        await apply_effect(event, tx)

    consumer = _consumer(db, broker, handlers={"note.added": sometimes}, max_attempts=1)
    first, second = note(n=1), note(n=2)
    await _publish(broker, first, second)
    await consumer.run_once()
    letters = await consumer.dead_letters()
    assert [letter.event_id for letter in letters] == [str(first.id), str(second.id)]

    with pytest.raises(RuntimeError):
        await consumer.replay(letters[0].id)
    assert len(await consumer.dead_letters()) == 2  # still there
    broken = False
    assert await consumer.replay(letters[0].id) == "handled"
    assert await consumer.drop(letters[1].id) is True
    assert await consumer.drop(letters[1].id) is False

    assert await effects(db) == [str(first.id)]
    assert await consumer.dead_letters() == []
    with pytest.raises(InvalidInputError):
        await consumer.replay(letters[0].id)


def _raw(**changes: Any) -> bytes:
    raw = orjson.loads(note().to_json())
    raw.update(changes)
    return orjson.dumps(raw)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_raw(type="task.exploded"), "unknown_event_type"),
        (_raw(payload={"text": 5}), "payload.text"),
        (_raw(payload={"text": "x" * 300_000}), "payload_too_large"),
        (b"\xff\x00 not json", "invalid_input"),
        (b"[]", "invalid_input"),
    ],
)
async def test_hostile_input_is_dead_lettered_with_the_reason_and_the_consumer_goes_on(
    db: Database, body: bytes, reason: str
) -> None:
    """Bytes that can never be handled go to the dead letters at once; the next event is handled."""
    await create_effects_table(db)
    broker = MemoryBroker()
    consumer = _consumer(db, broker, handlers={"note.added": apply_effect})
    good = note()
    await broker.publish([OutgoingMessage(id="hostile-1", topic=TOPIC, body=body)])
    await _publish(broker, good)

    await consumer.run_once()

    [letter] = await consumer.dead_letters()
    assert reason in letter.reason
    assert letter.attempts == 1
    assert await effects(db) == [str(good.id)]


async def test_a_message_whose_id_is_not_its_events_is_dead_lettered(db: Database) -> None:
    """A forged or mixed-up message id could defeat the inbox: it is refused."""
    broker = MemoryBroker()
    consumer = _consumer(db, broker, handlers={"note.added": apply_effect})
    await broker.publish([OutgoingMessage(id="other", topic=TOPIC, body=note().to_json())])

    await consumer.run_once()

    [letter] = await consumer.dead_letters()
    assert "message id" in letter.reason


async def test_events_without_a_handler_are_acked_and_skipped(db: Database) -> None:
    """A consumer acks the types it does not handle, so they do not pile up."""
    broker = MemoryBroker()
    consumer = _consumer(db, broker)
    await _publish(broker, note())

    assert await consumer.run_once() == 1
    assert broker.pending(TOPIC, "effects") == 0
    assert await consumer.dead_letters() == []


async def test_a_stop_does_not_wait_out_an_idle_consumers_fetch(db: Database) -> None:
    """An idle consumer sat in its fetch for the whole ``wait_seconds`` before a stop
    took effect: every shutdown of a process with consumers (every taskboard test app)
    paid it. A stop now gives up a waiting fetch; an event published afterwards is
    still there for the next consumer of the group."""
    await create_effects_table(db)
    broker = MemoryBroker()
    consumer = _consumer(db, broker, wait_seconds=3600, drain_seconds=3600,
                         handlers={"note.added": apply_effect})  # fmt: skip
    await consumer.start()
    await asyncio.sleep(0.05)  # in its fetch, waiting
    await asyncio.wait_for(consumer.aclose(), 60)  # a bound, not a timing: 3600 s before
    event = note("a", 1)
    await _publish(broker, event)
    again = _consumer(db, broker, handlers={"note.added": apply_effect})
    assert await again.run_once() == 1
    assert await effects(db) == [str(event.id)]
