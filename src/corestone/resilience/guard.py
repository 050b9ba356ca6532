"""Guard: one call through a circuit breaker written as a ``with`` / ``async with`` block."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corestone.resilience.breaker import CircuitBreaker

__all__ = ["Guard"]


class Guard:
    """One call through a breaker as a ``with`` / ``async with`` block.

    Entering takes permission (raising CircuitOpenError when refused); leaving records
    the block's outcome from the exception it raised, if any. Use a new one per block.
    """

    __slots__ = ("_breaker", "_start")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._start = 0.0

    def __enter__(self) -> CircuitBreaker:
        self._breaker.permit()
        self._start = self._breaker.clock()
        return self._breaker

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        breaker = self._breaker
        if exc is None:
            breaker._record_value(None, self._start, breaker.clock())
        else:
            breaker._record_error(exc, self._start)

    async def __aenter__(self) -> CircuitBreaker:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
