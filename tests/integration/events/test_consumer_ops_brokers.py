"""Consumer operations against the real brokers: the group's lag as each broker counts
it, and a 1 MiB hostile delivery that must not be stored whole in the dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from corestone.db import Database, Transaction
from corestone.events import DomainEvent, EventConsumer
from corestone.events.brokers import OutgoingMessage
from corestone.events.inbox import CLIPPED_BODY_BYTES
from corestone.observability.health import HealthStatus
from corestone.observability.metrics import Metrics

from .brokers import KINDS, cleanup, make_broker, service_url, unique_topic
from .conftest import note, registry

MIB = 1024 * 1024


@pytest.fixture(params=KINDS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Any, str]]:
    kind = str(request.param)
    url = service_url(kind, request)
    topic = unique_topic()
    opened = make_broker(kind, url)
    await opened.start()
    yield kind, opened, topic
    await opened.aclose()
    await cleanup(make_broker(kind, url), topic, ["effects"])


async def _applied(event: DomainEvent, tx: Transaction) -> None:
    await tx.session.execute(
        text("INSERT INTO effects (event_id) VALUES (:e)"), {"e": str(event.id)}
    )


async def test_the_groups_lag_comes_from_the_broker(
    db: Database, broker: tuple[str, Any, str]
) -> None:
    """Four events published and not yet handed to the group: each broker says 4 (Redis
    XINFO GROUPS lag, JetStream num_pending, RabbitMQ ready messages), the gauge shows it
    and the check warns above ``lag_warn``; handled, 0 and a pass."""
    _, real, topic = broker
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE effects (event_id VARCHAR(64) PRIMARY KEY)"))
    metrics = Metrics()
    consumer = EventConsumer(db, real, registry(), group="effects", topic=topic, lag_warn=2,
                             handlers={"note.added": _applied}, metrics=metrics,
                             wait_seconds=0.5)  # fmt: skip
    await real.ensure_group(topic, "effects")
    await real.publish(
        [
            OutgoingMessage(id=str(e.id), topic=topic, body=e.to_json())
            for e in (note(n=n) for n in range(4))
        ]
    )

    assert await _lag_settles(consumer, 4) == 4
    assert (
        metrics.registry.get_sample_value("corestone_events_consumer_lag", {"group": "effects"})
        == 4
    )
    assert (await consumer.check()).status is HealthStatus.WARN

    handled = 0
    for _ in range(20):
        handled += await consumer.run_once()
        if handled >= 4:
            break
    assert await _lag_settles(consumer, 0) == 0
    assert (await consumer.check()).status is HealthStatus.PASS


async def _lag_settles(consumer: EventConsumer, expected: int) -> int | None:
    """The lag once it reads ``expected`` (a broker's count may trail an ack a moment)."""
    lag = None
    for _ in range(40):
        lag = await consumer.refresh_lag()
        if lag == expected:
            break
        await asyncio.sleep(0.05)
    return lag


async def test_asking_the_lag_of_a_group_not_made_yet_disturbs_nothing(
    broker: tuple[str, Any, str],
) -> None:
    """A consumer reads its lag before its first fetch made the group: None, and a
    delivery another group holds stays acknowledgeable and is not redelivered. On
    RabbitMQ the passive declare of the missing queue closed the publisher's channel:
    the next call reconnected, dropping every consumer's channel, and the next lag
    raised a bare ChannelInvalidStateError."""
    _, real, topic = broker
    await real.ensure_group(topic, "effects")
    await real.publish([OutgoingMessage(id="m1", topic=topic, body=b"{}")])
    [held] = await real.fetch(topic, "effects", consumer="c", limit=1, wait_seconds=5)

    assert await real.lag(topic, "not-yet") is None
    await real.ack(held)
    assert await real.lag(topic, "effects") == 0
    assert await real.fetch(topic, "effects", consumer="c", limit=1, wait_seconds=1.5) == []


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
async def test_a_1_mib_delivery_is_dead_lettered_clipped_and_the_consumer_goes_on(
    db: Database, request: pytest.FixtureRequest, kind: str
) -> None:
    """A hostile 1 MiB message (4x the largest event) through a real broker: the dead
    letter keeps its first 4 KiB and the reason names the full size; the good event
    after it is handled. (NATS refuses a message over its 1 MiB max_payload itself.)"""
    url = service_url(kind, request)
    topic = unique_topic()
    real = make_broker(kind, url)
    await real.start()
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE effects (event_id VARCHAR(64) PRIMARY KEY)"))
        consumer = EventConsumer(db, real, registry(), group="effects", topic=topic,
                                 handlers={"note.added": _applied}, wait_seconds=0.5)  # fmt: skip
        await real.ensure_group(topic, "effects")
        good = note()
        hostile = b'{"id": "' + b"A" * (MIB - 10) + b'"}'
        await real.publish([OutgoingMessage(id="hostile", topic=topic, body=hostile)])
        await real.publish([OutgoingMessage(id=str(good.id), topic=topic, body=good.to_json())])

        for _ in range(20):
            await consumer.run_once()
            async with db.transaction(read_only=True) as tx:
                effects = list(await tx.session.execute(text("SELECT event_id FROM effects")))
            if effects:
                break

        assert [row.event_id for row in effects] == [str(good.id)]
        [letter] = await consumer.dead_letters()
        assert letter.event_id == "hostile"
        assert len(letter.body) == CLIPPED_BODY_BYTES
        assert letter.body.startswith('{"id": "AAAA')
        assert letter.reason.startswith("payload_too_large")
        assert f"body of {len(hostile)} bytes" in letter.reason
    finally:
        await real.aclose()
        await cleanup(make_broker(kind, url), topic, ["effects"])
