"""What a breaker reports: state transitions and (when someone listens) every call.

Listeners are plain callables run synchronously, in the calling thread, after the
breaker's lock is released. Keep them quick and non-blocking (put the event on a queue
for slow work); an exception in a listener is logged and never reaches the caller.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BreakerEvent", "CallEvent", "EventKind", "Listener", "State", "StateChange"]


class State(enum.StrEnum):
    """A breaker's states: the three of the pattern and three set by hand."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    DISABLED = "disabled"  # every call allowed, nothing recorded
    FORCED_OPEN = "forced_open"  # every call rejected until changed by hand
    METRICS_ONLY = "metrics_only"  # every call allowed and recorded, never opens


class EventKind(enum.StrEnum):
    """The kinds of :class:`CallEvent`."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"
    NOT_PERMITTED = "not_permitted"


@dataclass(frozen=True, slots=True)
class StateChange:
    """The breaker ``name`` moved from ``before`` to ``after``; ``remote`` if a peer said so."""

    name: str
    before: State
    after: State
    at: float
    reason: str
    remote: bool = False


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One call through the breaker (only made when a call listener is registered)."""

    name: str
    kind: EventKind
    seconds: float
    slow: bool
    error: BaseException | None = None


BreakerEvent = StateChange | CallEvent
Listener = Callable[[BreakerEvent], None]
