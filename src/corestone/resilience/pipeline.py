"""Pipeline: bulkhead, retry, circuit breaker and timeout composed in the order that works.

``bulkhead(retry(breaker(timeout(call))))``, outermost first:

* **timeout innermost**: each attempt is bounded, and a hung attempt becomes a
  ``TimeoutError`` the breaker records (a failure, and slow).
* **breaker inside retry**: every attempt is counted, so a failing dependency opens the
  breaker after the attempts it really received; and once open, the breaker's
  ``CircuitOpenError`` ends the retry at once (retry never retries it) instead of
  sleeping through backoffs against a dependency known to be down.
* **bulkhead outermost**: a rejected call costs nothing downstream, and the slot is held
  for the whole logical call including its backoffs, which is the load the caller really
  puts on the dependency.

This is Polly v8's recommended order and Resilience4j's Retry-around-CircuitBreaker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from corestone.resilience.breaker import CircuitBreaker
from corestone.resilience.bulkhead import Bulkhead
from corestone.resilience.retry import Retry
from corestone.resilience.timeout import Timeout

__all__ = ["Pipeline"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Any of the four guards, each optional, applied in the documented order."""

    breaker: CircuitBreaker | None = None
    retry: Retry | None = None
    timeout: Timeout | None = None
    bulkhead: Bulkhead | None = None

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through every configured guard."""
        timeout, breaker, retry, bulkhead = self.timeout, self.breaker, self.retry, self.bulkhead

        async def attempt() -> T:
            if timeout is None:
                return await fn(*args, **kwargs)
            return await timeout.call(fn, *args, **kwargs)

        async def guarded() -> T:
            return await attempt() if breaker is None else await breaker.acall(attempt)

        async def retried() -> T:
            return await guarded() if retry is None else await retry.call(guarded)

        if bulkhead is None:
            return await retried()
        return await bulkhead.call(retried)
