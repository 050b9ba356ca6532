"""Which provider a message tries first, and what guards each provider.

Each configured provider is a :class:`ProviderRoute`: the provider, its weight (for
weighted round-robin) and its rate limit. At run time each gets a :class:`Slot` holding
its circuit breaker (``email.<name>`` in the :class:`~corestone.resilience.BreakerRegistry`,
so ``CORESTONE_BREAKERS`` can tune it and ``/api/ops/breakers`` shows it) and its rate
limiter (aiolimiter's leaky bucket, one per provider and process).

``failover``: every message tries the providers in the configured order. ``weighted``:
the first provider is picked by smooth weighted round-robin (nginx's: over any window
the picks follow the weights, interleaved, deterministically), the others follow in the
configured order as failover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from corestone._extras import requires_extra
from corestone.email.providers.base import EmailProvider
from corestone.resilience.breaker import CircuitBreaker
from corestone.resilience.registry import BreakerRegistry

with requires_extra(__name__, "email"):
    from aiolimiter import AsyncLimiter

__all__ = ["ProviderRoute", "Router", "Slot", "Strategy", "supports_idempotency"]

Strategy = Literal["failover", "weighted"]

_UNLIMITED_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class ProviderRoute:
    """A configured provider: its weight and its rate limit (messages per second)."""

    provider: EmailProvider
    weight: int = 1
    max_per_second: float | None = None

    def __post_init__(self) -> None:
        if self.weight < 1:
            raise ValueError(f"{self.provider.name}: weight must be at least 1")
        if self.max_per_second is not None and not self.max_per_second > 0:
            raise ValueError(f"{self.provider.name}: max_per_second must be positive")


def supports_idempotency(provider: EmailProvider) -> bool:
    """Whether ``provider`` delivers a repeated message (same id and key) only once.

    A provider says so with ``idempotent = True``; none of the HTTP APIs corestone ships
    offers such a key today, so the attribute is optional and absent means no.
    """
    return getattr(provider, "idempotent", False) is True


class Slot:
    """One provider at run time: the provider, its breaker and its limiter."""

    def __init__(self, route: ProviderRoute, breakers: BreakerRegistry) -> None:
        self.route = route
        self.provider = route.provider
        self.name = route.provider.name
        self.breaker: CircuitBreaker = breakers.get(f"email.{self.name}")
        self.limiter: AsyncLimiter | None = None
        chunk = max(1, int(route.provider.max_batch))
        if route.max_per_second is not None:
            # A bucket of one second's worth, at least one message: a batch never asks
            # for more than the bucket holds (aiolimiter refuses that).
            capacity = max(1.0, route.max_per_second)
            self.limiter = AsyncLimiter(capacity, capacity / route.max_per_second)
            chunk = min(chunk, int(capacity))
        self.chunk = min(chunk, _UNLIMITED_CHUNK)
        self.idempotent = supports_idempotency(route.provider)


class Router:
    """Provider order per message, from the routes and the strategy."""

    def __init__(
        self, routes: Sequence[ProviderRoute], strategy: Strategy, breakers: BreakerRegistry
    ) -> None:
        names = [r.provider.name for r in routes]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique, got {names}")
        if strategy not in ("failover", "weighted"):
            raise ValueError(f"unknown strategy {strategy!r}")
        self.strategy = strategy
        self.slots = tuple(Slot(route, breakers) for route in routes)
        self._current = [0] * len(self.slots)
        self._total = sum(route.weight for route in routes)

    def by_name(self, name: str | None) -> Slot | None:
        return next((slot for slot in self.slots if slot.name == name), None)

    def order(self) -> tuple[Slot, ...]:
        """The providers the next message tries, first choice first."""
        if self.strategy == "failover" or len(self.slots) < 2:
            return self.slots
        for index, slot in enumerate(self.slots):
            self._current[index] += slot.route.weight
        best = max(range(len(self.slots)), key=lambda i: (self._current[i], -i))
        self._current[best] -= self._total
        first = self.slots[best]
        return (first, *(slot for slot in self.slots if slot is not first))
