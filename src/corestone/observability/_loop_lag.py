"""The event loop's scheduling delay, measured by a periodic callback that costs nearly nothing.

Every ``interval`` seconds a plain callback (no task, no coroutine) is scheduled with
``call_later``; when it runs, the difference between when it ran and when it was due is
the lag: how long the loop was busy with something else (a blocking call, a CPU-bound
handler, a flood of callbacks). One callback and one tuple per interval is the whole cost.

The lag reported is the largest one seen in the last ``window`` seconds, because a scrape
every 15 s or a health poll would otherwise only ever see the lag of the latest tick, and
a stall of 2 s between two ticks would be missed. Samples older than the window are dropped
as new ones arrive, so memory stays at ``window / interval`` entries.

A monitor runs on the loop it was started on; starting it twice is a no-op.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

__all__ = ["LoopLagMonitor"]


class LoopLagMonitor:
    """A component measuring how late the event loop runs a periodic callback."""

    name = "loop-lag"

    def __init__(
        self,
        *,
        interval: float = 0.5,
        window: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or window <= 0:
            raise ValueError("interval and window must be positive")
        self.interval = interval
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque()  # (when, lag), oldest first
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    @property
    def running(self) -> bool:
        return self._handle is not None

    async def start(self) -> None:
        """Schedule the first probe on the running loop."""
        if self._handle is None:
            self._schedule()

    async def aclose(self) -> None:
        """Cancel the pending probe; the samples stay readable."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        self._due = self._clock() + self.interval
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self.record(max(0.0, self._clock() - self._due))
        self._schedule()

    def record(self, lag: float) -> None:
        """Add one measured lag (the probe does; a test may too) and drop expired samples."""
        now = self._clock()
        self._samples.append((now, lag))
        self._expire(now)

    def lag(self) -> float:
        """The largest lag in the last ``window`` seconds (0.0 before any probe has run)."""
        # Read without expiring: a scrape may run in another thread than the probe.
        horizon = self._clock() - self.window
        return max((lag for when, lag in list(self._samples) if when >= horizon), default=0.0)

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
