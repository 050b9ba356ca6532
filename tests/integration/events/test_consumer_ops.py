"""Consumer operations on each database: replays asked for from another process, the
group's lag, inbox pruning, and the cap on a dead letter's body (issue 14)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from corestone.db import Database, Transaction
from corestone.events import DomainEvent, EventConsumer, MemoryBroker
from corestone.events.brokers import OutgoingMessage
from corestone.events.inbox import CLIPPED_BODY_BYTES, InboxRecord, InboxStore
from corestone.observability.health import HealthStatus
from corestone.observability.metrics import Metrics

from .conftest import create_effects_table, effects, note, registry

TOPIC = "corestone.events"
INBOX: Any = InboxRecord.__table__


class Handler:
    """Writes the effect row; fails while ``broken``; may linger inside the transaction."""

    def __init__(self, *, broken: bool = False, linger: float = 0.0) -> None:
        self.broken, self.linger, self.calls = broken, linger, 0

    async def __call__(self, event: DomainEvent, tx: Transaction) -> None:
        self.calls += 1
        await tx.session.execute(
            text("INSERT INTO effects (event_id) VALUES (:e)"), {"e": str(event.id)}
        )
        await asyncio.sleep(self.linger)
        if self.broken:
            raise RuntimeError(f"still broken (call {self.calls})")


def _consumer(db: Database, broker: MemoryBroker, handler: Any, **options: Any) -> EventConsumer:
    settings: dict[str, Any] = {"group": "effects", "wait_seconds": 0, "max_attempts": 1}
    settings.update(options)
    return EventConsumer(db, broker, registry(), handlers={"note.added": handler}, **settings)


async def _dead_letter(db: Database, broker: MemoryBroker, event: DomainEvent) -> int:
    """Put ``event`` in the group's dead letters the real way: a handler that fails."""
    await broker.publish([OutgoingMessage(id=str(event.id), topic=TOPIC, body=event.to_json())])
    await _consumer(db, broker, Handler(broken=True)).run_once()
    async with db.transaction(read_only=True) as tx:
        [letter] = await InboxStore().dead_letters(tx.session, consumer="effects")
    return letter.id


async def _mark(db: Database, **which: Any) -> list[int]:
    """What ``corestone events dead-letters replay`` does (it has no handlers)."""
    async with db.transaction() as tx:
        return await InboxStore().request_replay(tx.session, **which)


async def test_a_marked_dead_letter_is_replayed_once_by_one_of_two_consumers(
    db: Database,
) -> None:
    """Two consumers of the group (two processes) look for marked letters at the same
    moment; the handler lingers in its transaction so the looks overlap. It runs once,
    its effect is there once, the letter is gone and the mark with it."""
    await create_effects_table(db)
    broker = MemoryBroker()
    event = note()
    letter_id = await _dead_letter(db, broker, event)
    assert await _mark(db, ids=[letter_id]) == [letter_id]
    handler = Handler(linger=0.3)
    first, second = (_consumer(db, broker, handler) for _ in range(2))

    results = await asyncio.gather(first.replay_requested(), second.replay_requested())

    assert handler.calls == 1
    assert sorted(len(r) for r in results) == [0, 1]
    assert {**results[0], **results[1]} == {letter_id: "handled"}
    assert await effects(db) == [str(event.id)]
    assert await first.dead_letters() == []
    assert await first.replay_requested() == {}  # nothing marked is left


async def test_a_failed_replay_keeps_the_letter_with_the_new_reason_unmarked(
    db: Database,
) -> None:
    """The replay's handler fails: its writes and its inbox row roll back, the letter
    stays with the new error, one attempt more, and no mark (the CLI reads that as
    failed). Fixed, an in-process replay then applies it once."""
    await create_effects_table(db)
    broker = MemoryBroker()
    event = note()
    letter_id = await _dead_letter(db, broker, event)
    await _mark(db, consumer="effects")
    handler = Handler(broken=True)
    consumer = _consumer(db, broker, handler)

    assert await consumer.replay_requested() == {letter_id: "failed"}

    [letter] = await consumer.dead_letters()
    assert letter.replay_requested_at is None
    assert letter.attempts == 2
    assert "still broken (call 1)" in letter.reason
    assert await effects(db) == []
    assert await consumer.replay_requested() == {}  # not marked: not tried again
    handler.broken = False
    assert await consumer.replay(letter_id) == "handled"
    assert await effects(db) == [str(event.id)]


async def test_an_in_process_replay_that_fails_records_the_reason_and_raises(
    db: Database,
) -> None:
    """``consumer.replay`` raises the handler's error, and the letter tells the same."""
    await create_effects_table(db)
    broker = MemoryBroker()
    letter_id = await _dead_letter(db, broker, note())
    consumer = _consumer(db, broker, Handler(broken=True))

    with pytest.raises(RuntimeError, match="still broken"):
        await consumer.replay(letter_id)

    [letter] = await consumer.dead_letters()
    assert (letter.attempts, letter.reason) == (
        2,
        "replay failed: RuntimeError('still broken (call 1)')",
    )


async def test_a_letter_that_never_decodes_fails_its_replay_with_the_reason(
    db: Database,
) -> None:
    """Junk bytes replayed: a failed replay (not an exception out of the loop)."""
    broker = MemoryBroker()
    await broker.publish([OutgoingMessage(id="junk", topic=TOPIC, body=b"\xffnot json")])
    consumer = _consumer(db, broker, Handler())
    await consumer.run_once()
    [letter] = await consumer.dead_letters()
    await _mark(db, ids=[letter.id])

    assert await consumer.replay_requested() == {letter.id: "failed"}

    [after] = await consumer.dead_letters()
    assert after.reason.startswith("replay: invalid_input")
    assert after.replay_requested_at is None


async def test_a_running_consumer_replays_what_another_process_marked(db: Database) -> None:
    """The marks are made outside the consumer (as the CLI does); the running consumer's
    loop finds them within its replay period, and only its own group's."""
    await create_effects_table(db)
    broker = MemoryBroker()
    event = note()
    letter_id = await _dead_letter(db, broker, event)
    async with db.transaction() as tx:  # another group's letter, marked too
        await InboxStore().dead_letter(
            tx.session, consumer="other", event_id="x", type_=None, body=b"{}", reason="r",
            attempts=1,
        )  # fmt: skip
    await _mark(db, consumer="other")
    consumer = _consumer(db, broker, Handler(), replay_poll_seconds=0.1, wait_seconds=0.05)
    await consumer.start()
    try:
        await _mark(db, ids=[letter_id])
        for _ in range(100):
            if await effects(db):
                break
            await asyncio.sleep(0.05)
    finally:
        await consumer.aclose()

    assert await effects(db) == [str(event.id)]
    assert await consumer.dead_letters() == []
    async with db.transaction(read_only=True) as tx:
        [other] = await InboxStore().dead_letters(tx.session, consumer="other")
    assert other.replay_requested_at is not None  # not this group's: left alone


async def test_lag_is_read_from_the_broker_into_the_gauge_and_the_health_check(
    db: Database,
) -> None:
    """Five events the group has not been handed: lag 5, above ``lag_warn`` 3, so the
    check warns; once handled, lag 0 and the check passes. The running consumer does
    the same refresh on its own (``lag_refresh_seconds``)."""
    metrics = Metrics()
    broker = MemoryBroker()
    consumer = _consumer(db, broker, Handler(), lag_warn=3, metrics=metrics)
    await create_effects_table(db)
    await broker.ensure_group(TOPIC, "effects")
    assert (await consumer.check()).status is HealthStatus.PASS  # lag not read yet
    events = [note(n=n) for n in range(5)]
    await broker.publish(
        [OutgoingMessage(id=str(e.id), topic=TOPIC, body=e.to_json()) for e in events]
    )

    assert await consumer.refresh_lag() == 5
    gauge = "corestone_events_consumer_lag"
    assert metrics.registry.get_sample_value(gauge, {"group": "effects"}) == 5
    check = await consumer.check()
    assert check.status is HealthStatus.WARN
    assert check.observed_value == 5
    assert "5 messages behind" in (check.output or "")

    await consumer.run_once()
    assert await consumer.refresh_lag() == 0
    assert (await consumer.check()).status is HealthStatus.PASS
    assert metrics.registry.get_sample_value(gauge, {"group": "effects"}) == 0

    running = _consumer(db, broker, Handler(), group="loop", lag_refresh_seconds=0.05,
                        metrics=metrics, wait_seconds=0.05)  # fmt: skip
    await running.start()
    try:  # its first refresh precedes its group (None); a later one reads 0
        for _ in range(100):
            if running.lag == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        await running.aclose()
    assert metrics.registry.get_sample_value(gauge, {"group": "loop"}) == 0


async def test_inbox_rows_past_the_retention_are_pruned_in_chunks(db: Database) -> None:
    """Seven of the group's rows are older than the retention, two are newer, and the
    other group's old rows are not the group's to prune: seven go, in chunks of three,
    and the metric counts them."""
    now = datetime(2030, 1, 8, tzinfo=UTC)
    old, recent = InboxStore(now=lambda: now - timedelta(days=8)), InboxStore(now=lambda: now)
    async with db.transaction() as tx:
        for n in range(7):
            await old.claim(tx.session, "effects", f"old-{n}")
            await old.claim(tx.session, "other", f"old-{n}")
        for n in range(2):
            await recent.claim(tx.session, "effects", f"new-{n}")
    metrics = Metrics()
    consumer = _consumer(db, MemoryBroker(), Handler(), prune_chunk=3, now=lambda: now,
                         metrics=metrics)  # fmt: skip

    assert await consumer.prune_inbox() == 7
    assert await consumer.prune_inbox() == 0

    async with db.transaction(read_only=True) as tx:
        rows = await tx.session.execute(select(INBOX.c.consumer, INBOX.c.event_id))
        left = sorted(tuple(r) for r in rows)
    assert left == [("effects", "new-0"), ("effects", "new-1")] + [
        ("other", f"old-{n}") for n in range(7)
    ]
    pruned = metrics.registry.get_sample_value(
        "corestone_events_inbox_pruned_total", {"group": "effects"}
    )
    assert pruned == 7


async def test_a_redelivery_within_the_retention_still_has_no_second_effect(
    db: Database,
) -> None:
    """Pruning keeps what it must: an event handled a day ago (inside the week) and
    delivered again after a prune is a duplicate, not a second effect."""
    await create_effects_table(db)
    now = datetime.now(UTC)
    broker = MemoryBroker(dedupe_window_seconds=0)
    consumer = _consumer(db, broker, Handler(), now=lambda: now - timedelta(days=1))
    event = note()
    message = OutgoingMessage(id=str(event.id), topic=TOPIC, body=event.to_json())
    await broker.publish([message])
    await consumer.run_once()
    consumer = _consumer(db, broker, Handler(), now=lambda: now)

    assert await consumer.prune_inbox() == 0
    await broker.publish([message])
    [delivery] = await broker.fetch(TOPIC, "effects", consumer="c", limit=1, wait_seconds=0)
    assert await consumer.handle(delivery) == "duplicate"
    assert await effects(db) == [str(event.id)]


def test_a_retention_shorter_than_an_hour_is_refused() -> None:
    """A retention below the redelivery horizon would let a redelivery apply twice."""
    with pytest.raises(ValueError, match="inbox_retention_seconds"):
        EventConsumer(Database("sqlite+aiosqlite://"), MemoryBroker(), registry(), group="g",
                      inbox_retention_seconds=60)  # fmt: skip


async def test_an_oversized_body_is_stored_clipped_with_its_size(db: Database) -> None:
    """A 1 MiB delivery is no event: the dead letter keeps its first bytes and says how
    large it was, instead of a megabyte per hostile message."""
    broker = MemoryBroker()
    consumer = _consumer(db, broker, Handler())
    body = b"{" + b"x" * (1024 * 1024 - 1)
    await broker.publish([OutgoingMessage(id="huge", topic=TOPIC, body=body)])

    await consumer.run_once()

    [letter] = await consumer.dead_letters()
    assert len(letter.body) == CLIPPED_BODY_BYTES
    assert f"body of {len(body)} bytes" in letter.reason
    assert letter.reason.startswith("payload_too_large")
    async with db.transaction(read_only=True) as tx:
        size = await tx.session.execute(
            text("SELECT length(body) FROM corestone_events_dead_letters")
        )
        assert size.scalar_one() == CLIPPED_BODY_BYTES
        count = await tx.session.execute(select(func.count()).select_from(INBOX))
        assert count.scalar_one() == 0


async def test_a_stopping_consumer_finishes_the_delivery_in_hand_and_leaves_the_rest(
    db: Database,
) -> None:
    """``aclose`` while the first of three fetched deliveries is being handled: that one
    finishes, the other two are left to the broker (redelivered later). The loop's
    "stop between deliveries" check looked for its own task, which ``aclose`` had
    already cleared, so it handled the whole batch while draining."""
    await create_effects_table(db)
    broker = MemoryBroker()
    started = asyncio.Event()
    handler = Handler(linger=0.3)

    async def first_blocks(event: DomainEvent, tx: Transaction) -> None:
        started.set()
        await handler(event, tx)

    consumer = _consumer(db, broker, first_blocks, wait_seconds=0.05, drain_seconds=10)
    events = [note(n=n) for n in range(3)]
    await broker.publish(
        [OutgoingMessage(id=str(e.id), topic=TOPIC, body=e.to_json()) for e in events]
    )
    await consumer.start()
    await asyncio.wait_for(started.wait(), 10)

    await consumer.aclose()

    assert handler.calls == 1
    assert await effects(db) == [str(events[0].id)]
    assert broker.pending(TOPIC, "effects") == 2
