"""Domain events: typed events, the in-process bus, the transactional outbox, its relay,
brokers and consumers that apply each event once.

The event types and their registry need only the core; the bus, the outbox, the relay
and the consumers need the database (the ``postgres`` or ``sqlite`` extra);
``add_events(infra, registry)`` wires them into an infrastructure. Names are imported on
first use. See docs/events.md.
"""

from typing import TYPE_CHECKING

from corestone import _lazy

if TYPE_CHECKING:
    from corestone.events.brokers.base import Broker, Delivery, OutgoingMessage
    from corestone.events.brokers.memory import MemoryBroker
    from corestone.events.bus import EventBus
    from corestone.events.consumer import EventConsumer
    from corestone.events.event import MAX_EVENT_BYTES, DomainEvent, EventPayload
    from corestone.events.inbox import DeadLetter
    from corestone.events.registry import EventRegistry
    from corestone.events.relay import DEFAULT_TOPIC, OutboxRelay
    from corestone.events.wiring import Events, add_events

__getattr__, __dir__ = _lazy.lazy_exports(
    __name__,
    {
        "DEFAULT_TOPIC": "corestone.events.relay",
        "MAX_EVENT_BYTES": "corestone.events.event",
        "Broker": "corestone.events.brokers.base",
        "DeadLetter": "corestone.events.inbox",
        "Delivery": "corestone.events.brokers.base",
        "DomainEvent": "corestone.events.event",
        "EventBus": "corestone.events.bus",
        "EventConsumer": "corestone.events.consumer",
        "EventPayload": "corestone.events.event",
        "EventRegistry": "corestone.events.registry",
        "Events": "corestone.events.wiring",
        "MemoryBroker": "corestone.events.brokers.memory",
        "OutboxRelay": "corestone.events.relay",
        "OutgoingMessage": "corestone.events.brokers.base",
        "add_events": "corestone.events.wiring",
    },
)

__all__ = [
    "DEFAULT_TOPIC",
    "MAX_EVENT_BYTES",
    "Broker",
    "DeadLetter",
    "Delivery",
    "DomainEvent",
    "EventBus",
    "EventConsumer",
    "EventPayload",
    "EventRegistry",
    "Events",
    "MemoryBroker",
    "OutboxRelay",
    "OutgoingMessage",
    "add_events",
]
