"""Wire events into an :class:`~corestone.Infrastructure`: the bus, the relay, consumers.

``add_events(infra, registry)`` is to events what ``add_email(infra)`` is to email: one
call that builds the parts from the infrastructure's own database, broker, breakers and
metrics, manages them as components, and exposes them as ``infra.events``::

    events = add_events(infra, registry, topic_for=lambda _type: "billing")
    events.consumer("mailer", {"invoice.paid": send_receipt})
    async with infra:
        async with infra.db.transaction() as tx:
            await infra.events.bus.record(event)

The broker is ``infra.broker`` (``CORESTONE_BROKER_URL``); when that is unset, a
:class:`~corestone.events.MemoryBroker` becomes the process's broker, behind the breaker
``broker:memory`` like any other. See docs/events.md ("Wire it into a service").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from corestone.events._host import EventsHost
from corestone.events.brokers.base import Broker
from corestone.events.brokers.memory import MemoryBroker
from corestone.events.bus import EventBus
from corestone.events.consumer import ConsumerHandler, EventConsumer
from corestone.events.event import DomainEvent
from corestone.events.registry import EventRegistry
from corestone.events.relay import DEFAULT_TOPIC, OutboxRelay

if TYPE_CHECKING:
    from corestone.db.transactions import Transaction

__all__ = ["Events", "add_events"]


class Events:
    """What :func:`add_events` wired into one infrastructure (``infra.events``).

    ``bus`` records events (in the caller's transaction); ``relay`` publishes the outbox
    (it runs in this process only when ``relaying``); :meth:`consumer` adds consumer
    groups, each a managed component. ``consumers`` holds them by name.
    """

    def __init__(
        self,
        infra: EventsHost,
        registry: EventRegistry,
        *,
        bus: EventBus,
        relay: OutboxRelay,
        broker: Broker,
        topic_for: Callable[[str], str],
        relaying: bool,
    ) -> None:
        self._infra = infra
        self.registry = registry
        self.bus = bus
        self.relay = relay
        self.broker = broker
        self.topic_for = topic_for
        self.relaying = relaying
        self.consumers: dict[str, EventConsumer] = {}

    async def record(self, *events: DomainEvent, transaction: Transaction | None = None) -> None:
        """``bus.record``: in ``transaction``, else the open one, else one of their own."""
        await self.bus.record(*events, transaction=transaction)

    def consumer(
        self,
        group: str,
        handlers: Mapping[str, ConsumerHandler],
        *,
        topic: str | None = None,
        **options: Any,
    ) -> EventConsumer:
        """Add the consumer group ``group`` handling ``handlers``; a managed component.

        Its topic is the one ``topic_for`` gives its event types (they must share one;
        split the handlers, one call per topic, otherwise), or ``topic``. ``options``
        are :class:`EventConsumer`'s (``max_attempts``, ``batch``, ``wait_seconds``…).
        Its health check joins readiness, not critical: events wait in the broker while
        a consumer is down. Call it before the infrastructure starts.
        """
        if not handlers:
            raise ValueError(f"{group}: no handlers")
        if topic is None:
            topics = sorted({self.topic_for(event_type) for event_type in handlers})
            if len(topics) > 1:
                raise ValueError(
                    f"{group}: its event types are on topics {', '.join(topics)}; "
                    "add one consumer per topic (topic=...)"
                )
            topic = topics[0]
        consumer = EventConsumer(
            self._infra.db,
            self.broker,
            self.registry,
            group=group,
            handlers=handlers,
            topic=topic,
            breakers=self._infra.breakers,
            metrics=self._infra.metrics,
            **options,
        )
        if consumer.name in self.consumers:  # the same group on a second topic
            consumer.name = f"{consumer.name}@{topic}"
        self._infra.add(consumer, check=consumer.check, component_type="worker", critical=False)
        self.relay.declare_group(topic, group)  # before the relay's first publish
        self.consumers[consumer.name] = consumer
        return consumer


def add_events(
    infra: EventsHost,
    registry: EventRegistry,
    *,
    topic_for: Callable[[str], str] = lambda _type: DEFAULT_TOPIC,
    run_relay: bool = True,
    **relay_options: Any,
) -> Events:
    """Wire events into ``infra`` and return them (also ``infra.events``).

    Builds the :class:`EventBus` (every recorded event goes to the outbox; a commit that
    recorded some wakes the relay when it runs here) and the :class:`OutboxRelay` on
    ``infra.broker`` with ``topic_for`` and ``relay_options`` (``batch``,
    ``poll_seconds``, ``retention_seconds``…). With no ``CORESTONE_BROKER_URL`` the
    broker is a :class:`MemoryBroker` of this process, added here.

    ``run_relay=False`` is for a process that only records (``serve --no-worker``): the
    relay is not started, and its check (the outbox's backlog and age) still joins
    readiness, not critical, so a backlog that nobody publishes shows. Call it once per
    infrastructure, before it starts; the registry, bus, relay and this object are
    registered in ``infra.services``.
    """
    if infra.running:
        raise RuntimeError("set up events before the infrastructure starts")
    broker = infra.broker
    if broker is None:
        broker = infra._add_broker(MemoryBroker())  # the embedded default
    relay = OutboxRelay(
        infra.db,
        broker,
        breakers=infra.breakers,
        metrics=infra.metrics,
        topic_for=topic_for,
        **relay_options,
    )
    bus = EventBus(
        infra.db,
        registry,
        metrics=infra.metrics,
        on_recorded=relay.wake if run_relay else None,
    )
    events = Events(
        infra,
        registry,
        bus=bus,
        relay=relay,
        broker=broker,
        topic_for=topic_for,
        relaying=run_relay,
    )
    infra.events = events  # refuses a second add_events before anything is registered
    if run_relay:
        infra.add(relay, check=relay.check, component_type="worker", critical=False)
    else:
        infra.health.register(relay.name, relay.check, component_type="worker", critical=False)
    infra.add(bus, critical=False)  # stopped before the relay: after-commit handlers drain
    for svc_type, value in (
        (EventRegistry, registry),
        (EventBus, bus),
        (OutboxRelay, relay),
        (Events, events),
    ):
        infra.services.register_value(svc_type, value)
    return events
