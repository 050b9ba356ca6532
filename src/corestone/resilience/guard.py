"""Guard: one call through a circuit breaker written as a ``with`` / ``async with`` block.

It is built only on the breaker's public permit API (:class:`Permits`), the same one
adapters use, so it imports nothing from the breaker and works with any object that has
those methods.
"""

from __future__ import annotations

from types import TracebackType
from typing import Generic, Protocol, TypeVar

from corestone.clock import Clock

__all__ = ["Guard", "Permits"]


class Permits(Protocol):
    """What a guard needs from a breaker: take a permit, then report or give it back."""

    @property
    def clock(self) -> Clock: ...

    def permit(self) -> int: ...

    async def apermit(self) -> int: ...

    def record_outcome(self, permit: int, seconds: float, *, failed: bool = False) -> None: ...

    def record_error(self, permit: int, error: BaseException, seconds: float) -> None: ...


B = TypeVar("B", bound=Permits)


class Guard(Generic[B]):
    """One call through a breaker as a ``with`` / ``async with`` block.

    Entering takes a permit (raising CircuitOpenError when refused; the async form also
    passes a fleet trial gate); leaving records the block's outcome under that permit:
    a success, or the exception it raised, classified by the breaker. Use one per block.
    """

    __slots__ = ("_breaker", "_permit", "_start")

    def __init__(self, breaker: B) -> None:
        self._breaker = breaker
        self._permit = 0
        self._start = 0.0

    def __enter__(self) -> B:
        self._permit = self._breaker.permit()
        self._start = self._breaker.clock()
        return self._breaker

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        breaker = self._breaker
        seconds = breaker.clock() - self._start
        if exc is None:
            breaker.record_outcome(self._permit, seconds)
        else:
            breaker.record_error(self._permit, exc, seconds)

    async def __aenter__(self) -> B:
        self._permit = await self._breaker.apermit()
        self._start = self._breaker.clock()
        return self._breaker

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
