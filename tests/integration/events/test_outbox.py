"""The outbox and its relay on both databases: commit publishes exactly, rollback nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from corestone.db import Database
from corestone.errors import InvalidInputError
from corestone.events import DomainEvent, EventBus, MemoryBroker, OutboxRelay
from corestone.events.outbox import OutboxStore

from .conftest import note, outbox_rows, registry


async def _published(broker: MemoryBroker) -> list[DomainEvent]:
    deliveries = await broker.fetch("corestone.events", "check", consumer="c", limit=10_000,
                                    wait_seconds=0)  # fmt: skip
    return [DomainEvent.from_json(d.body) for d in deliveries]


def _relay(db: Database, broker: MemoryBroker, **options: object) -> OutboxRelay:
    return OutboxRelay(db, broker, listen=False, **options)  # type: ignore[arg-type]


async def test_a_rolled_back_transaction_publishes_nothing(db: Database) -> None:
    """Events recorded in a transaction that rolls back never reach the outbox or the broker."""
    bus, broker = EventBus(db, registry()), MemoryBroker()
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await bus.record(note("1"), note("2"))
            raise RuntimeError("undo")

    assert await _relay(db, broker).run_once() == 0
    assert await outbox_rows(db) == []
    assert await _published(broker) == []


async def test_a_savepoint_rolled_back_takes_its_events_with_it(db: Database) -> None:
    """An event recorded in a savepoint that rolls back is gone; the outer one's is kept."""
    bus, broker = EventBus(db, registry()), MemoryBroker()
    kept, dropped = note("1"), note("2")
    async with db.transaction():
        await bus.record(kept)
        with pytest.raises(RuntimeError):
            async with db.transaction():
                await bus.record(dropped)
                raise RuntimeError("undo the savepoint")

    await _relay(db, broker).run_once()

    assert [e.id for e in await _published(broker)] == [kept.id]


async def test_a_commit_publishes_exactly_its_events_in_order_per_aggregate(db: Database) -> None:
    """What a transaction recorded is published once, equal to what was recorded, in order."""
    bus, broker = EventBus(db, registry()), MemoryBroker()
    recorded = [note(aggregate, n) for n in range(5) for aggregate in ("a", "b", "c")]
    async with db.transaction():
        await bus.record(*recorded[:7])
    await bus.record(*recorded[7:])  # a transaction of its own
    relay = _relay(db, broker, batch=4)

    while await relay.run_once():
        pass
    published = await _published(broker)

    assert published == recorded
    rows = await outbox_rows(db)
    assert {r.status for r in rows} == {"sent"}
    assert sorted(r.position for r in rows) == list(range(1, 16))
    assert await relay.run_once() == 0


async def test_recording_refuses_what_the_registry_refuses_and_writes_nothing(
    db: Database,
) -> None:
    """An event of an unregistered type is an error at record; the transaction rolls back."""
    bus = EventBus(db, registry())
    bad = note()
    bad = DomainEvent(
        id=bad.id, type="nobody.knows", aggregate_type="x", aggregate_id="1",
        occurred_at=bad.occurred_at, schema_version=1, payload={},
    )  # fmt: skip

    with pytest.raises(InvalidInputError):
        async with db.transaction():
            await bus.record(note("1"), bad)

    assert await outbox_rows(db) == []


async def test_a_failed_publish_is_retried_after_a_backoff_and_then_sent(db: Database) -> None:
    """The broker down: rows go back with a backoff and last_error; later they are sent once."""
    now = [datetime.now(UTC)]
    broker = MemoryBroker()
    bus = EventBus(db, registry(), store=OutboxStore(now=lambda: now[0]))
    await bus.record(note("1"))
    relay = _relay(db, broker, now=lambda: now[0], backoff_initial_seconds=5.0)
    await broker.aclose()

    with pytest.raises(Exception, match="closed"):
        await relay.run_once()
    await broker.start()
    [row] = await outbox_rows(db)
    assert (row.status, row.attempts, row.lease_owner) == ("pending", 1, None)
    assert "closed" in row.last_error
    assert await relay.run_once() == 0  # backing off
    now[0] += timedelta(seconds=6)

    assert await relay.run_once() == 1
    assert len(await _published(broker)) == 1


async def test_two_relays_at_once_publish_each_event_once_in_order(db: Database) -> None:
    """Two relays sharing a database and a broker: every event once, each aggregate in order."""
    bus = EventBus(db, registry())
    recorded = [note(str(n % 7), n) for n in range(120)]
    for start in range(0, 120, 10):
        await bus.record(*recorded[start : start + 10])
    broker = MemoryBroker(dedupe_window_seconds=0)  # count repeats, do not hide them
    first, second = _relay(db, broker, batch=7), _relay(db, broker, batch=5)

    for _ in range(100):
        done = await asyncio.gather(first.run_once(), second.run_once())
        if not any(done):
            break
    published = await _published(broker)

    assert sorted(e.id for e in published) == sorted(e.id for e in recorded)
    for aggregate in map(str, range(7)):
        mine = [e.payload["n"] for e in published if e.aggregate_id == aggregate]
        assert mine == sorted(mine)


async def test_a_relay_that_died_before_marking_is_taken_over_after_its_lease(
    db: Database,
) -> None:
    """Claimed and published but never marked: after the lease, another relay publishes again."""
    now = [datetime.now(UTC)]
    store = OutboxStore(now=lambda: now[0])
    await EventBus(db, registry(), store=store).record(note("1"), note("1", 1))
    async with db.transaction() as tx:  # the dead relay's claim
        claimed = await store.claim(tx.session, owner="dead", limit=10, lease=timedelta(seconds=30))
    assert len(claimed) == 2
    broker = MemoryBroker()
    relay = _relay(db, broker, now=lambda: now[0])

    assert await relay.run_once() == 0
    now[0] += timedelta(seconds=31)
    assert await relay.run_once() == 2
    async with db.transaction() as tx:  # the dead relay's late mark is fenced off
        assert await store.mark_sent(tx.session, claimed, owner="dead") == set()
    assert [e.payload["n"] for e in await _published(broker)] == [0, 1]


async def test_a_held_event_blocks_the_later_events_of_its_aggregate_only(db: Database) -> None:
    """While one relay holds an aggregate's event, another takes other aggregates, not that one."""
    bus = EventBus(db, registry())
    await bus.record(note("a", 0))
    await bus.record(note("a", 1), note("b", 0))
    store = OutboxStore()
    async with db.transaction() as tx:
        held = await store.claim(tx.session, owner="one", limit=1, lease=timedelta(seconds=30))
    async with db.transaction() as tx:
        other = await store.claim(tx.session, owner="two", limit=10, lease=timedelta(seconds=30))

    assert [c.aggregate for c in held] == ["note:a"]
    assert [c.aggregate for c in other] == ["note:b"]


async def test_sent_rows_are_pruned_after_the_retention_and_positions_replay(db: Database) -> None:
    """Replay reads sent events by position; pruning removes only those past the retention."""
    now = [datetime.now(UTC)]
    bus = EventBus(db, registry(), store=OutboxStore(now=lambda: now[0]))
    relay = _relay(db, MemoryBroker(), now=lambda: now[0], retention_seconds=3600)
    await bus.record(note("1", 0), note("1", 1))
    await relay.run_once()
    now[0] += timedelta(minutes=50)
    await bus.record(note("1", 2))
    await relay.run_once()
    async with db.transaction(read_only=True) as tx:
        window = await relay.store.sent_after(tx.session, 1, limit=10)
    assert [(s.position, DomainEvent.from_json(s.body).payload["n"]) for s in window] == [
        (2, 1), (3, 2),
    ]  # fmt: skip

    now[0] += timedelta(minutes=20)
    assert await relay.prune(chunk=1) == 2
    assert [r.position for r in await outbox_rows(db)] == [3]


async def test_health_warns_when_the_oldest_unpublished_event_is_too_old(db: Database) -> None:
    """Lag beyond the threshold is a warning with the backlog as the observed value."""
    now = [datetime.now(UTC)]
    await EventBus(db, registry(), store=OutboxStore(now=lambda: now[0])).record(note())
    relay = _relay(db, MemoryBroker(), now=lambda: now[0], lag_warn_seconds=60)

    assert (await relay.check()).status == "pass"
    now[0] += timedelta(seconds=61)
    result = await relay.check()

    assert (result.status, result.observed_value) == ("warn", 1)
    await relay.run_once()
    assert (await relay.check()).status == "pass"


async def test_the_running_relay_publishes_after_a_commit_without_waiting_for_a_poll(
    db: Database,
) -> None:
    """A relay with a long poll publishes at once: woken by NOTIFY (PostgreSQL) or by the bus."""
    broker = MemoryBroker()
    relay = OutboxRelay(db, broker, poll_seconds=3600)
    bus = EventBus(db, registry(), on_recorded=None if db.dialect == "postgresql" else relay.wake)
    await relay.start()
    try:
        await bus.record(note())
        deliveries = await broker.fetch("corestone.events", "g", consumer="c", limit=1,
                                        wait_seconds=10)  # fmt: skip
    finally:
        await relay.aclose()

    assert len(deliveries) == 1
