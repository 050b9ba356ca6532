"""Brokers behind one port: the memory broker (the embedded default) and the circuit-breaker guard.

See :mod:`corestone.events.brokers.base` for the port and what each broker must do.
"""

from corestone.events.brokers.base import (
    Broker,
    DeadLetterBroker,
    Delivery,
    LagBroker,
    OutgoingMessage,
)
from corestone.events.brokers.guarded import GuardedBroker, guard_broker
from corestone.events.brokers.memory import MemoryBroker

__all__ = [
    "Broker",
    "DeadLetterBroker",
    "Delivery",
    "GuardedBroker",
    "LagBroker",
    "MemoryBroker",
    "OutgoingMessage",
    "guard_broker",
]
