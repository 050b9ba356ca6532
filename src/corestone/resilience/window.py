"""Sliding windows of call outcomes: the last N calls, or the calls of the last N seconds.

Both keep running totals, so recording a call is O(1) (the time window also drops whole
expired buckets, at most once per second of clock). Neither locks: the state machine
that owns a window serialises access to it.

An outcome is a small int: bit 1 = failed, bit 2 = slow. So ``SUCCESS`` 0, ``FAILURE`` 1,
``SLOW_SUCCESS`` 2, ``SLOW_FAILURE`` 3.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FAILURE",
    "SLOW",
    "SLOW_FAILURE",
    "SLOW_SUCCESS",
    "SUCCESS",
    "CountWindow",
    "TimeWindow",
    "WindowTotals",
]

SUCCESS = 0
FAILURE = 1
SLOW = 2
SLOW_SUCCESS = SLOW
SLOW_FAILURE = SLOW | FAILURE


@dataclass(frozen=True, slots=True)
class WindowTotals:
    """What a window holds right now."""

    calls: int
    failures: int
    slow: int

    def failure_rate(self) -> float:
        """Failed calls as a percentage of calls (0 when empty)."""
        return self.failures * 100.0 / self.calls if self.calls else 0.0

    def slow_rate(self) -> float:
        """Slow calls as a percentage of calls (0 when empty)."""
        return self.slow * 100.0 / self.calls if self.calls else 0.0


class CountWindow:
    """The outcomes of the last ``size`` calls, in a ring."""

    __slots__ = ("_i", "_ring", "_size", "calls", "failures", "slow")

    def __init__(self, size: int) -> None:
        self._size = size
        self._ring = bytearray(size)
        self._i = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def record(self, outcome: int, now: float) -> None:
        """Add one call's outcome, pushing out the oldest once full (``now`` unused)."""
        i = self._i
        old = self._ring[i]
        self._ring[i] = outcome
        self._i = i + 1 if i + 1 < self._size else 0
        if self.calls < self._size:
            self.calls += 1
            old = SUCCESS
        if old != outcome:
            self.failures += (outcome & FAILURE) - (old & FAILURE)
            self.slow += ((outcome & SLOW) - (old & SLOW)) >> 1

    def record_successes(self, count: int, now: float) -> None:
        """Add ``count`` successful calls at once (the breaker batches its successes)."""
        if count >= self._size:
            self._ring = bytearray(self._size)
            self._i = 0
            self.calls = self._size
            self.failures = self.slow = 0
            return
        for _ in range(count):
            self.record(SUCCESS, now)

    def totals(self, now: float) -> WindowTotals:
        return WindowTotals(self.calls, self.failures, self.slow)

    def reset(self) -> None:
        self._ring = bytearray(self._size)
        self._i = self.calls = self.failures = self.slow = 0


class TimeWindow:
    """The outcomes of the calls made in the last ``seconds`` whole seconds of clock.

    Bucket ``k`` holds second ``s`` with ``s % seconds == k``; a bucket whose second is no
    longer in ``(now - seconds, now]`` is subtracted from the totals and cleared.
    """

    __slots__ = ("_calls", "_failures", "_last", "_second", "_size", "_slow", "calls",
                 "failures", "slow")  # fmt: skip

    def __init__(self, seconds: int) -> None:
        self._size = seconds
        self._second = [-1] * seconds
        self._calls = [0] * seconds
        self._failures = [0] * seconds
        self._slow = [0] * seconds
        self._last = -1
        self.calls = self.failures = self.slow = 0

    def record(self, outcome: int, now: float) -> None:
        """Add one call's outcome to the bucket of ``now``'s second."""
        second = int(now)
        if second != self._last:
            self._expire(second)
        k = second % self._size
        self._calls[k] += 1
        self.calls += 1
        if outcome:
            failed = outcome & FAILURE
            slow = outcome >> 1
            self._failures[k] += failed
            self._slow[k] += slow
            self.failures += failed
            self.slow += slow

    def record_successes(self, count: int, now: float) -> None:
        """Add ``count`` successful calls, all made in ``now``'s second."""
        second = int(now)
        if second != self._last:
            self._expire(second)
        self._calls[second % self._size] += count
        self.calls += count

    def totals(self, now: float) -> WindowTotals:
        second = int(now)
        if second != self._last:
            self._expire(second)
        return WindowTotals(self.calls, self.failures, self.slow)

    def reset(self) -> None:
        self.__init__(self._size)  # type: ignore[misc]

    def _expire(self, second: int) -> None:
        if second < self._last:  # a clock never goes back; keep the newer reading
            return
        self._last = second
        oldest = second - self._size + 1
        for k in range(self._size):
            held = self._second[k]
            if held != -1 and held < oldest:
                self.calls -= self._calls[k]
                self.failures -= self._failures[k]
                self.slow -= self._slow[k]
                self._calls[k] = self._failures[k] = self._slow[k] = 0
                self._second[k] = -1
        k = second % self._size
        if self._second[k] != second:
            self._second[k] = second
