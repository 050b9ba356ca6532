"""Hostile cases for a consumer's batch: handlers that misbehave inside their savepoint."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from corestone.db import Database, Transaction
from corestone.events import DomainEvent, EventConsumer, MemoryBroker
from corestone.events.brokers import OutgoingMessage

from .conftest import apply_effect, create_effects_table, effects, note, registry

TOPIC = "corestone.events"


def _consumer(db: Database, broker: MemoryBroker, handler: Any) -> EventConsumer:
    return EventConsumer(
        db, broker, registry(), handlers={"note.added": handler},
        group="effects", wait_seconds=0, max_attempts=3,
    )  # fmt: skip


async def _fetch(broker: MemoryBroker, *events: DomainEvent) -> Any:
    await broker.publish(
        [OutgoingMessage(id=str(e.id), topic=TOPIC, body=e.to_json()) for e in events]
    )
    return await broker.fetch(TOPIC, "effects", consumer="c", limit=10, wait_seconds=0)


async def test_a_handler_that_swallows_its_own_database_error(db: Database) -> None:
    """The second of four handlers writes, runs a statement that fails, catches the error
    and returns. Whatever becomes of that event, every event reported handled has its
    effect committed, and none is acked without it (on PostgreSQL the failed statement
    aborts the transaction until its savepoint is rolled back)."""
    await create_effects_table(db)
    broker = MemoryBroker()
    events = [note(str(n), n) for n in range(4)]

    async def swallows(event: DomainEvent, tx: Transaction) -> None:
        await apply_effect(event, tx)
        if event.id == events[1].id:
            with contextlib.suppress(DBAPIError):
                await tx.session.execute(text("SELECT * FROM no_such_table"))

    consumer = _consumer(db, broker, swallows)
    outcomes = await consumer.handle_batch(await _fetch(broker, *events))

    applied = await effects(db)
    for event, outcome in zip(events, outcomes, strict=True):
        if outcome == "handled":
            assert str(event.id) in applied, (outcomes, applied)
    assert [o for i, o in enumerate(outcomes) if i != 1] == ["handled"] * 3
    assert broker.pending(TOPIC, "effects") == (0 if outcomes[1] == "handled" else 1)


async def test_hooks_of_a_handler_that_raises_do_not_run(db: Database) -> None:
    """A handler registers an after_commit hook, then raises: its savepoint is rolled
    back, the batch commits the others, and that hook never runs (the others' do)."""
    await create_effects_table(db)
    broker = MemoryBroker()
    events = [note(str(n), n) for n in range(3)]
    ran: list[str] = []

    async def hooks_then_raises(event: DomainEvent, tx: Transaction) -> None:
        await apply_effect(event, tx)
        tx.after_commit(lambda: ran.append(str(event.id)))
        if event.id == events[1].id:
            raise RuntimeError("after registering a hook")

    consumer = _consumer(db, broker, hooks_then_raises)
    outcomes = await consumer.handle_batch(await _fetch(broker, *events))

    assert outcomes == ["handled", "retried", "handled"]
    assert sorted(ran) == sorted(str(e.id) for i, e in enumerate(events) if i != 1)


async def test_cancelled_mid_batch_acks_and_commits_nothing(db: Database) -> None:
    """The consumer's task is cancelled while the third handler runs: nothing of the
    batch commits, nothing is acked, and every event is delivered again."""
    await create_effects_table(db)
    broker = MemoryBroker()
    events = [note(str(n), n) for n in range(4)]
    started = asyncio.Event()

    async def third_hangs(event: DomainEvent, tx: Transaction) -> None:
        await apply_effect(event, tx)
        if event.id == events[2].id:
            started.set()
            await asyncio.Event().wait()

    consumer = _consumer(db, broker, third_hangs)
    deliveries = await _fetch(broker, *events)
    task = asyncio.create_task(consumer.handle_batch(deliveries))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await effects(db) == []
    assert broker.pending(TOPIC, "effects") == 4


async def test_one_event_handled_by_two_consumers_of_a_group_at_once_applies_once(
    db: Database,
) -> None:
    """The same event reaches two consumers of one group at once (a redelivery after a
    lease ran out, while the first still works on it). The first holds its inbox claim
    in its open batch transaction; the second's claim waits for that commit and finds
    it: one effect, one handled and one duplicate, both acked."""
    await create_effects_table(db)
    broker = MemoryBroker(dedupe_window_seconds=0)
    event = note()
    holding = asyncio.Event()
    release = asyncio.Event()

    async def holds_first(handled: DomainEvent, tx: Transaction) -> None:
        await apply_effect(handled, tx)
        if not holding.is_set():
            holding.set()
            await release.wait()

    first, second = _consumer(db, broker, holds_first), _consumer(db, broker, holds_first)
    [one] = await _fetch(broker, event)
    [two] = await _fetch(broker, event)
    running = asyncio.create_task(first.handle_batch([one]))
    await holding.wait()
    racing = asyncio.create_task(second.handle_batch([two]))
    await asyncio.sleep(0.2)  # let the second reach its claim (it waits on the first)
    release.set()
    outcomes = sorted([*(await running), *(await racing)])

    assert outcomes == ["duplicate", "handled"]
    assert await effects(db) == [str(event.id)]
    assert broker.pending(TOPIC, "effects") == 0
