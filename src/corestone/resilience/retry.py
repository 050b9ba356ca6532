"""Retry: exponential backoff with full jitter, attempts and a deadline, on tenacity.

The first attempt is a plain call: a call that succeeds at once pays for one ``try``
and nothing of tenacity's machinery. Only after a retryable failure does tenacity take
over, replaying that failure as its attempt 1 so its counting, waits and stop rules
(attempts, deadline) stay tenacity's own.

What a circuit breaker rejected (:class:`CircuitOpenError`) and a full bulkhead are
never retried: retrying them would only spin against a decision already made.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from corestone.errors import BulkheadFullError, CircuitOpenError, InvalidInputError

__all__ = ["Retry"]

P = ParamSpec("P")
T = TypeVar("T")

_NEVER = (CircuitOpenError, BulkheadFullError)


@dataclass(frozen=True, slots=True)
class Retry:
    """A retry policy: up to ``attempts`` tries within ``deadline_seconds`` (None: no limit).

    Waits are full-jitter exponential: random in ``[0, min(max, initial * 2**n))``
    (the AWS Architecture Blog's "full jitter", which spreads a herd of retrying clients
    best). ``retry_on`` lists the exception types worth retrying, or is a predicate.
    """

    attempts: int = 3
    initial_wait_seconds: float = 0.1
    max_wait_seconds: float = 5.0
    deadline_seconds: float | None = None
    retry_on: tuple[type[BaseException], ...] | Callable[[BaseException], bool] = (Exception,)
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)
    sleep_sync: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidInputError("attempts: must be at least 1", field="attempts", rule=">= 1")
        if self.initial_wait_seconds < 0 or self.max_wait_seconds < self.initial_wait_seconds:
            raise InvalidInputError(
                "max_wait_seconds: must be at least initial_wait_seconds (both >= 0)",
                field="max_wait_seconds",
                rule=">= initial_wait_seconds",
            )
        if self.deadline_seconds is not None and self.deadline_seconds <= 0:
            raise InvalidInputError(
                "deadline_seconds: must be greater than 0", field="deadline_seconds", rule="> 0"
            )

    def retryable(self, error: BaseException) -> bool:
        """Whether ``error`` is worth another attempt under this policy."""
        if isinstance(error, _NEVER) or not isinstance(error, Exception):
            return False
        if isinstance(self.retry_on, tuple):
            return isinstance(error, self.retry_on)
        return self.retry_on(error)

    def _stop(self) -> stop_base:
        stop: stop_base = stop_after_attempt(self.attempts)
        if self.deadline_seconds is not None:
            stop = stop | stop_after_delay(self.deadline_seconds)
        return stop

    def _tenacity_kwargs(self) -> dict[str, Any]:
        return {
            "stop": self._stop(),
            "wait": wait_random_exponential(
                multiplier=self.initial_wait_seconds, max=self.max_wait_seconds
            ),
            "retry": retry_if_exception(self.retryable),
            "reraise": True,
        }

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, retrying per the policy."""
        try:
            return await fn(*args, **kwargs)
        except Exception as error:
            if self.attempts == 1 or not self.retryable(error):
                raise
            first: list[BaseException] = [error]

        async def attempt() -> T:
            if first:
                raise first.pop()
            return await fn(*args, **kwargs)

        retrying = AsyncRetrying(sleep=self.sleep, **self._tenacity_kwargs())
        return await retrying(attempt)

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)``, retrying per the policy (sleeps the thread)."""
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            if self.attempts == 1 or not self.retryable(error):
                raise
            first: list[BaseException] = [error]

        def attempt() -> T:
            if first:
                raise first.pop()
            return fn(*args, **kwargs)

        retrying = Retrying(sleep=self.sleep_sync, **self._tenacity_kwargs())
        return retrying(attempt)

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a function or coroutine function with this policy."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def retried_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.call(fn, *args, **kwargs)

            return retried_async

        @functools.wraps(fn)
        def retried(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self.call_sync(fn, *args, **kwargs)

        return retried
