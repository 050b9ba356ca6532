"""The broker port: what the relay and the consumers need from a message broker.

Shaped after what Redis Streams, NATS JetStream and RabbitMQ have in common, so each
fits behind it without pretending:

- :meth:`Broker.publish` takes a *batch*, in order, each message with its own id. The
  id is the event id: JetStream de-duplicates on it (``Nats-Msg-Id``), Redis Streams and
  RabbitMQ carry it for the consumer's inbox. It returns only once the broker has the
  batch (``XADD`` replies, JetStream acks, RabbitMQ publisher confirms), or raises
  (:class:`~corestone.errors.UnavailableError`): then none, some or all of the batch
  may be stored, and the relay publishes the whole batch again.
- Consumers read in *groups* (a Redis consumer group, a durable JetStream consumer, a
  RabbitMQ queue): every group gets every message of a topic, and within a group each
  message goes to one consumer at a time. :meth:`Broker.fetch` waits up to a timeout
  for up to ``limit`` deliveries.
- Each delivery is :meth:`~Broker.ack`-ed once handled, or :meth:`~Broker.nak`-ed with a
  delay to come back later. A delivery neither acked nor naked within the group's ack
  wait (its consumer died) is delivered again. ``Delivery.attempt`` counts deliveries,
  1 for the first.
- Dead letters are the consumer's, kept in the database with the reason
  (:mod:`corestone.events.inbox`); a broker that has its own dead-letter exchange may
  also use it, but the consumer acks what it dead-lettered.
- The real brokers (:class:`DeadLetterBroker`) also give up on a delivery handed out
  ``max_deliver`` times without an ack or a nak (every consumer that took it died: a
  message that crashes its consumer) and keep it in a dead-letter place of their own,
  per group, to list and replay. Their ``max_deliver`` should exceed the consumers'
  ``max_attempts``, so a handler that merely fails ends in the database's dead letters.
- Every broker of corestone also tells a group's *lag* (:class:`LagBroker`): how many
  messages of the topic the group has not been handed yet. The consumers publish it as
  a metric and warn in their health check when it grows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from corestone.observability.health import CheckResult

__all__ = ["Broker", "DeadLetterBroker", "Delivery", "LagBroker", "OutgoingMessage"]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to publish: its id (for de-duplication), topic, body and headers.

    ``key`` is the ordering key (the event's aggregate): brokers that partition keep a
    key's messages in one partition, in order.
    """

    id: str
    topic: str
    body: bytes
    key: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message handed to a consumer of ``group``; ``handle`` is the broker's receipt."""

    id: str
    topic: str
    body: bytes
    group: str
    attempt: int
    headers: Mapping[str, str] = field(default_factory=dict)
    handle: Any = None


@runtime_checkable
class Broker(Protocol):
    """A message broker the outbox relay publishes to and consumers read from.

    A component: ``start`` connects, ``aclose`` disconnects. ``ping`` is its health check.
    """

    name: str

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Store ``messages`` in order; return once the broker has them all, or raise."""
        ...

    async def ensure_group(self, topic: str, group: str) -> None:
        """Create consumer group ``group`` on ``topic`` if missing (it starts at the beginning)."""
        ...

    async def fetch(
        self, topic: str, group: str, *, consumer: str, limit: int, wait_seconds: float
    ) -> Sequence[Delivery]:
        """Up to ``limit`` deliveries for ``consumer`` of ``group``, within ``wait_seconds``."""
        ...

    async def ack(self, delivery: Delivery) -> None:
        """The delivery is handled: never deliver it to this group again."""
        ...

    async def nak(self, delivery: Delivery, *, delay_seconds: float) -> None:
        """The delivery failed: deliver it again (to any consumer) after ``delay_seconds``."""
        ...

    async def ping(self) -> CheckResult:
        """A round trip to the broker, for readiness."""
        ...


@runtime_checkable
class DeadLetterBroker(Broker, Protocol):
    """A broker with dead letters of its own: deliveries no consumer answered ``max_deliver`` times.

    Each dead letter is a :class:`Delivery` whose headers carry ``x-dead-reason`` and
    ``x-dead-attempts``. Replaying delivers them to ``group`` again (on Redis Streams to
    every group of the topic: the other groups' inboxes drop them as duplicates).
    """

    max_deliver: int

    async def dead_letters(self, topic: str, group: str, *, limit: int = 100) -> list[Delivery]:
        """Up to ``limit`` of ``group``'s dead letters on ``topic``, oldest first."""
        ...

    async def replay_dead_letters(self, topic: str, group: str, *, limit: int = 100) -> int:
        """Deliver up to ``limit`` dead letters again; return how many were moved back."""
        ...


@runtime_checkable
class LagBroker(Broker, Protocol):
    """A broker that can tell how far behind a consumer group is."""

    async def lag(self, topic: str, group: str) -> int | None:
        """Messages of ``topic`` not yet handed to ``group``; None when it cannot tell
        (no such group yet, or the broker does not know: a trimmed Redis stream)."""
        ...
