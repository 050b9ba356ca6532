"""A broker behind a circuit breaker: every call of the port goes through it.

The relay and the consumers wrap whatever broker they are given in
:class:`GuardedBroker`, so a broker that is down is asked once per breaker trial, not
once per batch and per consumer, and callers get
:class:`~corestone.errors.CircuitOpenError` (an ``UnavailableError``) at once while it is
open. ``fetch`` waits are long by design, so the breaker's slow-call rule would count an
idle wait as slow: waits are not timed as calls (they go through with a permit that
records success or failure, never a duration).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from corestone.events.brokers.base import Broker, Delivery, LagBroker, OutgoingMessage
from corestone.observability.health import CheckResult
from corestone.resilience.breaker import CircuitBreaker

__all__ = ["GuardedBroker", "guard_broker"]

T = TypeVar("T")


class GuardedBroker:
    """``broker`` with each call through ``breaker`` (see the module doc)."""

    def __init__(self, broker: Broker, breaker: CircuitBreaker) -> None:
        self.inner = broker
        self.breaker = breaker
        self.name = broker.name

    async def start(self) -> None:
        await self.inner.start()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _call(self, fn: Callable[[], Awaitable[T]], *, timed: bool = True) -> T:
        permit = self.breaker.permit()
        started = time.perf_counter()
        try:
            result = await fn()
        except BaseException as error:
            if isinstance(error, Exception):
                self.breaker.record_error(permit, error, time.perf_counter() - started)
            else:
                self.breaker.release(permit)  # cancelled: the call counts for nothing
            raise
        self.breaker.record_outcome(permit, time.perf_counter() - started if timed else 0.0)
        return result

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        await self._call(lambda: self.inner.publish(messages))

    async def ensure_group(self, topic: str, group: str) -> None:
        await self._call(lambda: self.inner.ensure_group(topic, group))

    async def fetch(
        self, topic: str, group: str, *, consumer: str, limit: int, wait_seconds: float
    ) -> Sequence[Delivery]:
        return await self._call(
            lambda: self.inner.fetch(
                topic, group, consumer=consumer, limit=limit, wait_seconds=wait_seconds
            ),
            timed=False,
        )

    async def ack(self, delivery: Delivery) -> None:
        await self._call(lambda: self.inner.ack(delivery))

    async def nak(self, delivery: Delivery, *, delay_seconds: float) -> None:
        await self._call(lambda: self.inner.nak(delivery, delay_seconds=delay_seconds))

    async def ping(self) -> CheckResult:
        return await self._call(self.inner.ping)

    async def lag(self, topic: str, group: str) -> int | None:
        """The inner broker's :meth:`~LagBroker.lag`, or None when it has none."""
        inner = self.inner
        if not isinstance(inner, LagBroker):
            return None
        return await self._call(lambda: inner.lag(topic, group))


def guard_broker(broker: Broker, breaker: CircuitBreaker) -> Broker:
    """``broker`` behind ``breaker`` (unchanged if it already is behind that breaker)."""
    if isinstance(broker, GuardedBroker) and broker.breaker is breaker:
        return broker
    return GuardedBroker(broker, breaker)
