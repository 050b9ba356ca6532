"""BreakerSnapshot: one breaker's state and figures at a moment, for health, ops and metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from corestone.resilience.events import State

if TYPE_CHECKING:
    from corestone.resilience.breaker import CircuitBreaker

__all__ = ["BreakerSnapshot", "snapshot_of"]


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """What a breaker looks like now; ``as_json`` is the shape of ``/api/ops/breakers``."""

    name: str
    state: State
    failure_rate_percent: float
    slow_call_rate_percent: float
    window_calls: int
    window_failures: int
    window_slow: int
    successful_calls: int
    failed_calls: int
    slow_successful_calls: int
    slow_failed_calls: int
    ignored_calls: int
    not_permitted_calls: int
    consecutive_opens: int
    retry_after_seconds: float
    transitions: int

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


def snapshot_of(breaker: CircuitBreaker) -> BreakerSnapshot:
    """Read ``breaker`` under its lock, so the figures agree with each other."""
    machine = breaker.machine
    now = breaker.clock()
    with machine.lock:
        machine.settle(now)
        totals = machine.window.totals(now)
        counters = machine.counters
        return BreakerSnapshot(
            name=breaker.name,
            state=machine.state,
            failure_rate_percent=round(totals.failure_rate(), 3),
            slow_call_rate_percent=round(totals.slow_rate(), 3),
            window_calls=totals.calls,
            window_failures=totals.failures,
            window_slow=totals.slow,
            successful_calls=counters.successful,
            failed_calls=counters.failed,
            slow_successful_calls=counters.slow_successful,
            slow_failed_calls=counters.slow_failed,
            ignored_calls=counters.ignored,
            not_permitted_calls=machine.not_permitted(),
            consecutive_opens=machine.consecutive_opens,
            retry_after_seconds=round(machine.retry_after(now), 3),
            transitions=breaker.transitions,
        )
