"""Retry: exponential backoff with full jitter, attempts and a deadline, on tenacity.

The one retry policy of corestone: :class:`Retry` is what ``Pipeline``, transactions
(``Database.run_in_transaction``) and saga steps use, and tenacity runs the only loop.

The first attempt is a plain call: a call that succeeds at once pays for one ``try``
and nothing of tenacity's machinery. Only after a retryable failure does tenacity take
over, replaying that failure as its attempt 1 so its counting and waits stay tenacity's
own. The deadline is measured on the policy's clock from *before the first attempt*
(tenacity's own clock would start only after it), and a wait that would end beyond the
deadline is not begun: a 0.5 s deadline with a 1 s first attempt means one try.

What a circuit breaker rejected (:class:`CircuitOpenError`), a full bulkhead, and a
commit whose outcome is unknown (:class:`CommitUnknownError`) are never retried: the
first two would only spin against a decision already made, the last could apply a write
twice.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from corestone.clock import Clock, monotonic
from corestone.errors import (
    BulkheadFullError,
    CircuitOpenError,
    CommitUnknownError,
    InvalidInputError,
)

__all__ = ["OnRetry", "Retry", "RetryIf"]

P = ParamSpec("P")
T = TypeVar("T")

_NEVER = (CircuitOpenError, BulkheadFullError, CommitUnknownError)

RetryIf = Callable[[BaseException], bool]
OnRetry = Callable[[BaseException, int, float], None]
"""Called before each wait with the error, the number of the attempt that failed, the wait."""


@dataclass(frozen=True, slots=True)
class Retry:
    """A retry policy: up to ``attempts`` tries within ``deadline_seconds`` (None: no limit).

    Waits are full-jitter exponential: random in ``[0, min(max, initial * 2**n))``
    (the AWS Architecture Blog's "full jitter", which spreads a herd of retrying clients
    best). ``retry_on`` lists the exception types worth retrying, or is a predicate.
    The deadline counts from before the first attempt, on ``clock``.
    """

    attempts: int = 3
    initial_wait_seconds: float = 0.1
    max_wait_seconds: float = 5.0
    deadline_seconds: float | None = None
    retry_on: tuple[type[BaseException], ...] | RetryIf = (Exception,)
    clock: Clock = field(default=monotonic, repr=False)
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

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, retrying per the policy."""
        started = 0.0 if self.deadline_seconds is None else self.clock()  # deadline only
        try:
            return await fn(*args, **kwargs)
        except Exception as error:
            if self.attempts == 1 or not self.retryable(error):
                raise
            first = error
        return await self._continue(first, started, lambda _n: fn(*args, **kwargs), None, None)

    async def run(
        self,
        attempt: Callable[[int], Awaitable[T]],
        *,
        retry_if: RetryIf | None = None,
        on_retry: OnRetry | None = None,
    ) -> T:
        """Await ``attempt(n)`` for n = 1, 2, … until it returns or the policy gives up.

        For callers with their own bookkeeping (transactions, saga steps): ``retry_if``
        narrows what is retried (it and ``retry_on`` must both accept the error), and
        ``on_retry(error, n, wait)`` runs before each wait. The last error is raised.
        """
        started = 0.0 if self.deadline_seconds is None else self.clock()  # deadline only
        try:
            return await attempt(1)
        except Exception as error:
            if self.attempts == 1 or not self._accepts(error, retry_if):
                raise
            first = error
        return await self._continue(first, started, attempt, retry_if, on_retry)

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)``, retrying per the policy (sleeps the thread)."""
        started = 0.0 if self.deadline_seconds is None else self.clock()  # deadline only
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            if self.attempts == 1 or not self.retryable(error):
                raise
            first: list[BaseException] = [error]

        def again() -> T:
            if first:
                raise first.pop()
            return fn(*args, **kwargs)

        retrying = Retrying(sleep=self.sleep_sync, **self._tenacity(started, None, None))
        return retrying(again)

    async def _continue(
        self,
        first: BaseException,
        started: float,
        attempt: Callable[[int], Awaitable[T]],
        retry_if: RetryIf | None,
        on_retry: OnRetry | None,
    ) -> T:
        """Hand over to tenacity after attempt 1 failed with ``first``."""
        numbers = itertools.count(1)

        async def again() -> T:
            number = next(numbers)
            if number == 1:
                raise first
            return await attempt(number)

        retrying = AsyncRetrying(sleep=self.sleep, **self._tenacity(started, retry_if, on_retry))
        return await retrying(again)

    def _accepts(self, error: BaseException, retry_if: RetryIf | None) -> bool:
        return self.retryable(error) and (retry_if is None or retry_if(error))

    def _tenacity(
        self, started: float, retry_if: RetryIf | None, on_retry: OnRetry | None
    ) -> dict[str, Any]:
        stop: stop_base = stop_after_attempt(self.attempts)
        if self.deadline_seconds is not None:
            stop = stop | _StopBeforeDeadline(self.clock, started + self.deadline_seconds)
        options: dict[str, Any] = {
            "stop": stop,
            "wait": wait_random_exponential(
                multiplier=self.initial_wait_seconds, max=self.max_wait_seconds
            ),
            "retry": retry_if_exception(functools.partial(self._accepts, retry_if=retry_if)),
            "reraise": True,
        }
        if on_retry is not None:
            options["before_sleep"] = functools.partial(_report, on_retry)
        return options

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


class _StopBeforeDeadline(stop_base):
    """Stop when the coming wait would end at or after ``deadline`` on ``clock``."""

    def __init__(self, clock: Clock, deadline: float) -> None:
        self.clock = clock
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() + retry_state.upcoming_sleep >= self.deadline


def _report(on_retry: OnRetry, retry_state: RetryCallState) -> None:
    error = retry_state.outcome.exception() if retry_state.outcome is not None else None
    if error is not None:
        on_retry(error, retry_state.attempt_number, retry_state.upcoming_sleep)
