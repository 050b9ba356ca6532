"""The consumer on each real broker: retries through the broker's nak, dead letters in the
database with the reason, replay, and hostile input that does not stop it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from corestone.db import Database, Transaction
from corestone.events import DomainEvent, EventBus, EventConsumer, OutboxRelay
from corestone.events.brokers import OutgoingMessage

from .brokers import KINDS, cleanup, make_broker, service_url, unique_topic
from .conftest import note, registry


@pytest.fixture(params=KINDS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, str]]:
    kind = str(request.param)
    url = service_url(kind, request)
    topic = unique_topic()
    opened = make_broker(kind, url)
    await opened.start()
    yield opened, topic
    await opened.aclose()
    await cleanup(make_broker(kind, url), topic, ["effects", "other"])


async def test_retries_dead_letters_replay_and_hostile_input_on_a_real_broker(
    db: Database, broker: tuple[Any, str]
) -> None:
    """One event fails once and succeeds on its retry (a nak with a delay); one always
    fails and is dead-lettered after 3 attempts, with the error, then replayed once the
    handler is fixed; bytes that are no event are dead-lettered at once. Each event's
    effect happens once."""
    real, topic = broker
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE effects (event_id VARCHAR(64) PRIMARY KEY)"))
    flaky, poison, fine = note("a", 1), note("b", 2), note("c", 3)
    failures = {str(flaky.id): 1, str(poison.id): 10**6}

    async def apply(event: DomainEvent, tx: Transaction) -> None:
        if failures.get(str(event.id), 0) > 0:
            failures[str(event.id)] -= 1
            raise RuntimeError(f"cannot apply {event.aggregate_id}")
        await tx.session.execute(
            text("INSERT INTO effects (event_id) VALUES (:e)"), {"e": str(event.id)}
        )

    consumer = EventConsumer(db, real, registry(), group="effects", topic=topic,
                             handlers={"note.added": apply}, max_attempts=3, wait_seconds=0.5,
                             backoff_initial_seconds=0.2, backoff_max_seconds=0.4)  # fmt: skip
    await real.ensure_group(topic, "effects")
    await EventBus(db, registry()).record(flaky, poison, fine)
    relay = OutboxRelay(db, real, listen=False, topic_for=lambda _type: topic)
    assert await relay.run_once() == 3
    await real.publish([OutgoingMessage(id="junk", topic=topic, body=b"\xffnot json")])

    for _ in range(60):
        await consumer.run_once()
        if len(await consumer.dead_letters()) == 2 and len(await _effects(db)) == 2:
            break

    assert sorted(await _effects(db)) == sorted([str(flaky.id), str(fine.id)])
    letters = {letter.event_id: letter for letter in await consumer.dead_letters()}
    assert set(letters) == {str(poison.id), "junk"}
    assert letters[str(poison.id)].attempts == 3
    assert "cannot apply b" in letters[str(poison.id)].reason
    failures[str(poison.id)] = 0
    assert await consumer.replay(letters[str(poison.id)].id) == "handled"
    assert sorted(await _effects(db)) == sorted(str(e.id) for e in (flaky, poison, fine))


async def test_an_event_published_the_moment_a_consumer_started_reaches_its_group(
    db: Database, broker: tuple[Any, str]
) -> None:
    """Found by the RabbitMQ restart test, which lost its first events: ``start`` returned
    before the loop declared the group (that came after its first housekeeping), and
    RabbitMQ gives an event only to the queues that exist when it is published, so the
    first events went to the other group alone. ``start`` now declares the group first:
    an event published the moment it returns (the topic already has another group, so
    the publish is not refused) is applied by the new group, on every broker."""
    real, topic = broker
    await real.ensure_group(topic, "other")
    events = registry()
    event = note("a", 1)
    applied: list[str] = []

    async def apply(event: DomainEvent, tx: Transaction) -> None:
        applied.append(str(event.id))

    consumer = EventConsumer(db, real, events, group="effects", topic=topic,
                             handlers={"note.added": apply}, wait_seconds=0.2)  # fmt: skip
    await consumer.start()
    try:
        await real.publish([OutgoingMessage(id=str(event.id), topic=topic,
                                            body=events.check(event), key="a")])  # fmt: skip
        for _ in range(100):  # at most 10 s; applied within a pass when it arrived
            if applied:
                break
            await asyncio.sleep(0.1)
    finally:
        await consumer.aclose()

    assert applied == [str(event.id)]


async def test_a_relay_declares_its_consumers_groups_before_its_first_publish(
    db: Database, broker: tuple[Any, str]
) -> None:
    """On a first deploy the relay (added first) published the waiting outbox before the
    consumers had started, and a group new on RabbitMQ got none of it. The relay now
    creates the groups ``add_events`` wired before it publishes anything."""
    real, topic = broker
    await real.ensure_group(topic, "other")  # the topic is in use: publishing is accepted
    events = registry()
    waiting = [note("a", n) for n in range(3)]
    await EventBus(db, events).record(*waiting)
    relay = OutboxRelay(db, real, topic_for=lambda _type: topic, listen=False, poll_seconds=0.05)
    relay.declare_group(topic, "effects")
    await relay.start()
    try:
        for _ in range(100):  # at most 10 s: published on the first pass
            if (await relay.refresh_stats())[0] == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        await relay.aclose()
    applied: list[str] = []

    async def apply(event: DomainEvent, tx: Transaction) -> None:
        applied.append(str(event.id))

    consumer = EventConsumer(db, real, events, group="effects", topic=topic,
                             handlers={"note.added": apply}, wait_seconds=0.2)  # fmt: skip
    await consumer.start()
    try:
        for _ in range(100):
            if len(applied) == len(waiting):
                break
            await asyncio.sleep(0.1)
    finally:
        await consumer.aclose()
    assert sorted(applied) == sorted(str(e.id) for e in waiting)


async def _effects(db: Database) -> list[str]:
    async with db.transaction(read_only=True) as tx:
        return [r.event_id for r in await tx.session.execute(text("SELECT event_id FROM effects"))]
