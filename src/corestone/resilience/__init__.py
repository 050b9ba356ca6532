"""Resilience: circuit breakers (Resilience4j grade), retry, timeouts, bulkheads, fleet state.

Get a breaker from the registry (``infra.breakers.get("smtp")``) and wrap calls with it,
or compose everything with :class:`Pipeline`. See docs/resilience.md.
"""

from typing import TYPE_CHECKING

from corestone import _lazy

if TYPE_CHECKING:
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

__getattr__, __dir__ = _lazy.lazy_exports(
    __name__,
    {
        "BreakerConfig": "corestone.resilience.config",
        "BreakerEvent": "corestone.resilience.events",
        "BreakerRegistry": "corestone.resilience.registry",
        "BreakerSnapshot": "corestone.resilience.snapshot",
        "Bulkhead": "corestone.resilience.bulkhead",
        "BulkheadFullError": "corestone.errors",
        "CallEvent": "corestone.resilience.events",
        "CircuitBreaker": "corestone.resilience.breaker",
        "CircuitOpenError": "corestone.errors",
        "DEFAULTS_KEY": "corestone.resilience.registry",
        "EventKind": "corestone.resilience.events",
        "Fleet": "corestone.resilience.fleet",
        "Guard": "corestone.resilience.guard",
        "Listener": "corestone.resilience.events",
        "Permits": "corestone.resilience.guard",
        "Pipeline": "corestone.resilience.pipeline",
        "Retry": "corestone.resilience.retry",
        "State": "corestone.resilience.events",
        "StateChange": "corestone.resilience.events",
        "Timeout": "corestone.resilience.timeout",
        "WindowType": "corestone.resilience.config",
        "guard_engine": "corestone.resilience.integrations",
        "guard_redis": "corestone.resilience.integrations",
    },
)

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
