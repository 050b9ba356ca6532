"""The real brokers the broker tests run against, each with names of the test's own.

``open_broker(kind, url, topic)`` builds one with a short ack wait and a small
``max_deliver``; ``cleanup(kind, broker, topic, groups)`` deletes what the test made
(the stream, JetStream stream or RabbitMQ exchanges and queues).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest

from corestone.events.brokers.base import Broker, Delivery
from corestone.testing.services import require_service

KINDS = ["redis", "nats", "rabbitmq"]
NATS_URL = os.environ.get("CORESTONE_TEST_NATS_URL", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("CORESTONE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ACK_WAIT = 1.0
MAX_DELIVER = 3


def unique_topic() -> str:
    return f"test.{uuid.uuid4().hex[:10]}"


def service_url(kind: str, request: pytest.FixtureRequest) -> str:
    """The shared server's URL for ``kind`` (skipped locally if down, required under CI)."""
    if kind == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    url = NATS_URL if kind == "nats" else AMQP_URL

    async def probe() -> None:
        broker = make_broker(kind, url)
        await broker.start()
        try:
            await broker.ping()
        finally:
            await broker.aclose()

    require_service(kind, probe)
    return url


def make_broker(kind: str, url: str, **options: Any) -> Broker:
    options.setdefault("ack_wait_seconds", ACK_WAIT)
    options.setdefault("max_deliver", MAX_DELIVER)
    if kind == "redis":
        from corestone.events.brokers.redis_streams import RedisStreamsBroker

        return RedisStreamsBroker(url, key_prefix="corestone:test:events:", **options)
    if kind == "nats":
        from corestone.events.brokers.nats_jetstream import NatsJetStreamBroker

        return NatsJetStreamBroker(url, **options)
    from corestone.events.brokers.rabbitmq import RabbitMQBroker

    return RabbitMQBroker(url, **options)


async def cleanup(broker: Any, topic: str, groups: list[str]) -> None:
    """Delete what the test made on the server (best effort: the server may be gone)."""
    try:
        await broker.start()
        await asyncio.wait_for(broker.delete_topic(topic, groups), 10)
    except Exception:
        pass
    finally:
        await broker.aclose()


async def fetch_until(
    broker: Broker,
    topic: str,
    group: str,
    count: int,
    *,
    consumer: str = "c1",
    rounds: int = 40,
    ack: bool = True,
) -> list[Delivery]:
    """Fetch (acking each) until ``count`` deliveries came or ``rounds`` waits of 0.5 s ran out."""
    found: list[Delivery] = []
    for _ in range(rounds):
        batch = await broker.fetch(
            topic, group, consumer=consumer, limit=count - len(found), wait_seconds=0.5
        )
        for delivery in batch:
            if ack:
                await broker.ack(delivery)
        found += batch
        if len(found) >= count:
            break
    return found
