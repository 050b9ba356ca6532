"""The counters of an L1 cache, as one immutable snapshot."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MemoryStats"]


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """A snapshot of the L1 counters (plain ints: reading them costs nothing on the hot path).

    ``evictions`` counts entries removed because a bound was reached; ``rejections`` is the
    subset of those that were newcomers refused by the admission filter (plus values too big
    to be stored at all).  ``weight_bytes`` is 0 unless the cache weighs (a byte bound or
    an explicit ``weigher``).  ``entries`` may include expired entries the wheel has not reached.
    """

    hits: int
    misses: int
    sets: int
    evictions: int
    expirations: int
    rejections: int
    entries: int
    weight_bytes: int

    @property
    def hit_ratio(self) -> float:
        """Hits / (hits + misses), 0.0 before the first read."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
