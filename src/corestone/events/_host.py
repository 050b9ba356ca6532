"""What :func:`~corestone.events.add_events` needs of an infrastructure, and no more.

A protocol rather than ``corestone.runtime.Infrastructure`` itself: the runtime names
``Events`` (its ``events`` property), so the wiring naming the runtime made the two
modules import each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from corestone.container import Services
    from corestone.db.database import Database
    from corestone.events.brokers.base import Broker
    from corestone.observability.health import CheckResult, HealthRegistry
    from corestone.observability.metrics import Metrics
    from corestone.resilience.registry import BreakerRegistry

__all__ = ["EventsHost"]


class EventsHost(Protocol):
    """The parts of an infrastructure the events wiring uses (``Infrastructure`` is one)."""

    db: Database
    broker: Broker | None
    breakers: BreakerRegistry
    metrics: Metrics
    health: HealthRegistry
    services: Services

    @property
    def running(self) -> bool: ...

    @property
    def events(self) -> Any: ...

    @events.setter
    def events(self, events: Any) -> None: ...

    def add(
        self,
        component: Any,
        *,
        check: Callable[[], Awaitable[CheckResult | None]] | None = None,
        component_type: str = "component",
        critical: bool = True,
    ) -> Any: ...

    def _add_broker(self, broker: Broker) -> Broker: ...
