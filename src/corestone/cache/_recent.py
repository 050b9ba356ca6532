"""Recent invalidations: when each key and tag was last invalidated in this process.

A load that read its data from a snapshot older than an invalidation of its key or tags
must not store what it read (a read transaction that began before another request's
commit still sees the old row). Loads say when their snapshot began (``not_before``); this
log answers whether anything they would store was invalidated since. Patterns and resyncs
are recorded as "everything", which is conservative and rare. The log forgets entries
older than ``horizon`` seconds: no transaction that old should fill a cache.

Readings of a coarse clock (a ManualClock in tests, a 15 ms monotonic clock elsewhere)
often tie. A tie must not order an invalidation before a read that began earlier, so the
log hands out its own readings, :meth:`mark` for reads and the note times, each one past
every reading of the other kind it handed out before: their order is the order of the
calls, whatever the clock's resolution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from corestone.clock import Clock, monotonic

__all__ = ["RecentInvalidations"]

_MAX_ENTRIES: Final = 100_000


class RecentInvalidations:
    """Times (of the cache's clock) of the latest invalidation per full key or tag key."""

    def __init__(self, *, horizon: float = 600.0, clock: Clock = monotonic) -> None:
        self._at: dict[str, float] = {}
        self._everything_at = float("-inf")
        self._latest = float("-inf")  # of anything: most reads find nothing newer, in O(1)
        self._last_mark = float("-inf")
        self._horizon = horizon
        self._clock = clock

    @property
    def latest(self) -> float:
        """When anything at all was last invalidated."""
        return self._latest

    def mark(self) -> float:
        """A reading of the clock for a read or load to pass to :meth:`since` later.

        Never earlier than an invalidation noted before it, so a tie with one that came
        first does not count as "since".
        """
        now = max(self._clock(), self._latest)
        self._last_mark = max(self._last_mark, now)
        return now

    def _now(self) -> float:
        """A note time past every mark handed out before (see the module docstring)."""
        now = self._clock()
        if now <= self._last_mark:
            now = math.nextafter(self._last_mark, math.inf)
        return now

    def note(self, names: Iterable[str]) -> None:
        now = self._now()
        self._latest = now
        at = self._at
        for name in names:
            at[name] = now
        if len(at) > _MAX_ENTRIES:
            self._prune(now)

    def note_everything(self) -> None:
        self._everything_at = self._latest = self._now()

    def since(self, names: Iterable[str], moment: float) -> bool:
        """Whether any of ``names`` (or everything) was invalidated after ``moment``."""
        if self._latest <= moment:
            return moment < self._clock() - self._horizon
        if self._everything_at > moment:
            return True
        get = self._at.get
        for name in names:
            at = get(name)
            if at is not None and at > moment:
                return True
        return moment < self._clock() - self._horizon

    def _prune(self, now: float) -> None:
        cutoff = now - self._horizon
        self._at = {name: t for name, t in self._at.items() if t > cutoff}
        if len(self._at) > _MAX_ENTRIES:  # a storm of distinct keys: forget them, stay safe
            self._at.clear()
            self._everything_at = now
