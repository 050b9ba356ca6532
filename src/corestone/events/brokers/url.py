"""``CORESTONE_BROKER_URL`` → a broker, chosen by the URL's scheme.

``memory://`` (the embedded default), ``redis://`` / ``rediss://`` (Redis Streams),
``nats://`` / ``tls://`` (NATS JetStream), ``amqp://`` / ``amqps://`` (RabbitMQ). Each real
broker's client is imported only when its scheme is chosen, so a missing extra is reported
(:class:`~corestone.errors.MissingExtraError`, naming ``redis``, ``nats`` or ``rabbitmq``)
only to the process that configured that broker.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from corestone.events.brokers.base import Broker

__all__ = ["BROKER_SCHEMES", "broker_from_url"]

BROKER_SCHEMES = {
    "memory": "memory",
    "redis": "redis",
    "rediss": "redis",
    "nats": "nats",
    "tls": "nats",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
}
"""URL scheme → broker kind (also the extra it needs, except ``memory``)."""


def broker_from_url(url: str, **options: Any) -> Broker:
    """The broker ``url`` names, built with ``options`` (its constructor's keywords)."""
    scheme = urlsplit(url).scheme.lower()
    kind = BROKER_SCHEMES.get(scheme)
    if kind == "memory":
        from corestone.events.brokers.memory import MemoryBroker

        return MemoryBroker(**options)
    if kind == "redis":
        from corestone.events.brokers.redis_streams import RedisStreamsBroker

        return RedisStreamsBroker(url, **options)
    if kind == "nats":
        from corestone.events.brokers.nats_jetstream import NatsJetStreamBroker

        return NatsJetStreamBroker(url, **options)
    if kind == "rabbitmq":
        from corestone.events.brokers.rabbitmq import RabbitMQBroker

        return RabbitMQBroker(url, **options)
    expected = ", ".join(f"{s}://" for s in BROKER_SCHEMES)
    raise ValueError(f"broker URL scheme {scheme!r} is not one of {expected}")
