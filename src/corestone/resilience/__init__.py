"""Resilience: circuit breakers (Resilience4j grade), retry, timeouts, bulkheads, fleet state.

Get a breaker from the registry (``infra.breakers.get("smtp")``) and wrap calls with it,
or compose everything with :class:`Pipeline`. See docs/resilience.md.
"""

from corestone.errors import BulkheadFullError, CircuitOpenError
from corestone.resilience.breaker import CircuitBreaker
from corestone.resilience.bulkhead import Bulkhead
from corestone.resilience.config import BreakerConfig, WindowType
from corestone.resilience.events import (
    BreakerEvent,
    CallEvent,
    EventKind,
    Listener,
    State,
    StateChange,
)
from corestone.resilience.fleet import Fleet
from corestone.resilience.guard import Guard, Permits
from corestone.resilience.integrations import guard_engine, guard_redis
from corestone.resilience.pipeline import Pipeline
from corestone.resilience.registry import DEFAULTS_KEY, BreakerRegistry
from corestone.resilience.retry import Retry
from corestone.resilience.snapshot import BreakerSnapshot
from corestone.resilience.timeout import Timeout

__all__ = [
    "DEFAULTS_KEY",
    "BreakerConfig",
    "BreakerEvent",
    "BreakerRegistry",
    "BreakerSnapshot",
    "Bulkhead",
    "BulkheadFullError",
    "CallEvent",
    "CircuitBreaker",
    "CircuitOpenError",
    "EventKind",
    "Fleet",
    "Guard",
    "Listener",
    "Permits",
    "Pipeline",
    "Retry",
    "State",
    "StateChange",
    "Timeout",
    "WindowType",
    "guard_engine",
    "guard_redis",
]
