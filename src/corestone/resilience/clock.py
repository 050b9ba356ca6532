"""The clock a breaker reads: monotonic seconds, injectable so tests never sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "monotonic"]

Clock = Callable[[], float]
"""A function returning monotonic seconds (a float); ``time.perf_counter`` by default."""

monotonic: Clock = time.perf_counter


class ManualClock:
    """A clock that moves only when told to: the breaker's state machine in tests.

    ``clock()`` returns the current reading; ``advance(seconds)`` moves it on.
    """

    __slots__ = ("now",)

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward (never back: a monotonic clock cannot)."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self.now += seconds
