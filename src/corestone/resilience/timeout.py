"""Timeout: bound how long one awaited call may take, and count the calls that ran out.

Expiry cancels the call and raises the built-in :class:`TimeoutError`, which a breaker
records as a failure (and, being at least ``slow_call_seconds`` long when the two are
set sensibly, as slow). Only coroutines can be bounded this way: a thread cannot be
cancelled, so there is no sync variant on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from corestone.errors import InvalidInputError
from corestone.observability.metrics import Metrics

__all__ = ["Timeout"]

P = ParamSpec("P")
T = TypeVar("T")


class Timeout:
    """At most ``seconds`` per call; ``corestone_timeouts_total{name}`` counts expiries."""

    def __init__(self, name: str, seconds: float, *, metrics: Metrics | None = None) -> None:
        if seconds <= 0:
            raise InvalidInputError("seconds: must be greater than 0", field="seconds", rule="> 0")
        self.name = name
        self.seconds = seconds
        self.expired = 0
        self._counter = (
            metrics.counter("timeouts_total", "Calls cut off by a timeout.", ["name"]).labels(
                name=name
            )
            if metrics is not None
            else None
        )

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` for at most ``seconds``, else raise TimeoutError."""
        try:
            async with asyncio.timeout(self.seconds):
                return await fn(*args, **kwargs)
        except TimeoutError:
            self.expired += 1
            if self._counter is not None:
                self._counter.inc()
            raise
