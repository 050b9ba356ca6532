"""A clock that moves only when a test says so."""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    """A monotonic clock that moves only when told to.

    Pass it wherever corestone takes ``clock=``: ``clock()`` returns the current reading
    and ``advance(seconds)`` moves it on, so a test of a timeout, a TTL or a breaker's
    open wait runs in no real time.
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
