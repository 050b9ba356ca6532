"""The one clock every time-based component reads: monotonic seconds, injected.

Breakers, the cache, health, transactions and sagas take a ``clock`` argument
(a zero-argument callable returning seconds) and never read ``time`` themselves, so a
test drives them with :class:`corestone.testing.ManualClock` instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "monotonic"]

Clock = Callable[[], float]
"""A function returning monotonic seconds (a float); :data:`monotonic` by default."""

monotonic: Clock = time.monotonic
