"""Relay throughput, commit to broker: a backlog of committed events drained by one relay.

For each broker the outbox is emptied, then filled with ``count`` events (recorded
through ``EventBus.record``, 500 to a transaction, not timed: the writers' side is the
write-overhead figure). One :class:`~corestone.events.OutboxRelay` with its defaults
(batches of 500) then runs pass after pass until the outbox is empty: claim, publish
through the broker's breaker (the broker has the batch when ``publish`` returns: the Lua
script's reply, every JetStream ack, every RabbitMQ confirm), mark sent. Events per
second over the whole drain. Afterwards the broker must hold exactly ``count`` messages
and the outbox none pending.

The peer for each real broker is its own client publishing the same bodies, in the same
batches, straight to a topic of its own, with the same acknowledgement: a redis-py
pipeline of ``XADD`` (``MAXLEN ~``), nats-py ``publish_async`` with ``Nats-Msg-Id`` then
every ack, aio-pika persistent publishes with publisher confirms. That is the broker's
floor with no database at all; the relay's figure divided by it is what the outbox costs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from bench._events_setup import event, registry, reset_events
from corestone.db import Database
from corestone.events import EventBus, OutboxRelay
from corestone.events.brokers.base import Broker
from corestone.events.outbox import EventOutboxRecord

__all__ = [
    "BATCH",
    "RelayResult",
    "broker_holds",
    "fill_outbox",
    "peer_publish",
    "relay_drain",
]

BATCH = 500
_T: Any = EventOutboxRecord.__table__


@dataclass(frozen=True, slots=True)
class RelayResult:
    published: int
    seconds: float
    passes: int
    held: int | None
    """Messages the broker holds afterwards (None: not counted, the memory broker)."""
    pending: int
    """Outbox rows still pending afterwards: 0."""

    @property
    def per_second(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


async def fill_outbox(db: Database, count: int) -> list[str]:
    """Empty the outbox, then record ``count`` events, 500 to a transaction; their bodies."""
    await reset_events(db)
    bus = EventBus(db, registry())
    for first in range(0, count, BATCH):
        async with db.transaction():
            await bus.record(*(event(i) for i in range(first, min(first + BATCH, count))))
    async with db.transaction(read_only=True) as tx:
        rows = await tx.session.execute(select(_T.c.body).order_by(_T.c.seq))
        return [row.body for row in rows]


async def relay_drain(db: Database, broker: Broker, topic: str, count: int) -> RelayResult:
    """Time one relay draining the outbox (already filled) to ``topic``."""
    relay = OutboxRelay(db, broker, topic_for=lambda _type: topic, listen=False)
    passes = published = 0
    started = time.perf_counter()
    while done := await relay.run_once():
        published += done
        passes += 1
    seconds = time.perf_counter() - started
    async with db.transaction(read_only=True) as tx:
        pending = (
            await tx.session.execute(select(func.count()).where(_T.c.status == "pending"))
        ).scalar_one()
    held = await broker_holds(broker, topic, "bench")
    return RelayResult(published, seconds, passes, held, int(pending))


async def broker_holds(broker: Any, topic: str, group: str) -> int | None:
    """How many messages the broker keeps for ``topic`` (for RabbitMQ: in ``group``'s queue)."""
    if broker.name == "redis":
        return int(await broker._redis().xlen(broker.stream_key(topic)))
    if broker.name == "nats":
        js = await broker._jetstream()
        info = await js.stream_info(broker.stream_name(topic))
        return int(info.state.messages)
    if broker.name == "rabbitmq":
        for _ in range(50):  # confirmed messages show in the queue's count a moment later
            ready = await broker.lag(topic, group)
            if ready is not None and ready >= 0:
                return int(ready)
            await asyncio.sleep(0.1)
    return None


async def peer_publish(kind: str, broker: Any, topic: str, bodies: list[str]) -> float:
    """Publish ``bodies`` with ``kind``'s own client, batches of 500, acknowledged; seconds."""
    payload = [(f"peer-{i}", body.encode()) for i, body in enumerate(bodies)]
    batches = [payload[i : i + BATCH] for i in range(0, len(payload), BATCH)]
    if kind == "redis":
        client = broker._redis()
        stream = broker.stream_key(topic)
        started = time.perf_counter()
        for batch in batches:
            async with client.pipeline(transaction=False) as pipe:
                for message_id, body in batch:
                    fields = {"id": message_id, "key": "task:1", "body": body, "h:type": "t"}
                    pipe.xadd(stream, fields, maxlen=broker.max_len, approximate=True)  # type: ignore[arg-type]
                await pipe.execute()
        return time.perf_counter() - started
    if kind == "nats":
        js = await broker._jetstream()
        await broker._ensure_stream(topic)
        started = time.perf_counter()
        for batch in batches:
            acks = [
                await js.publish_async(topic, body, headers={"Nats-Msg-Id": message_id})
                for message_id, body in batch
            ]
            await asyncio.gather(*acks)
        return time.perf_counter() - started
    import aio_pika

    connection = await aio_pika.connect(broker.url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(topic, aio_pika.ExchangeType.FANOUT, durable=True)
        started = time.perf_counter()
        for batch in batches:
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            body, message_id=message_id,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key="",
                    )
                    for message_id, body in batch
                )
            )  # fmt: skip
        return time.perf_counter() - started
    finally:
        await connection.close()
