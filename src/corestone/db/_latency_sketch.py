"""A latency sketch: quantiles of a stream of durations in a fixed, small amount of memory.

Each duration is counted in a bucket of a geometric series (the DDSketch idea, with its
buckets fixed in advance): bucket ``i`` holds the durations in
``(GAMMA**(i-1), GAMMA**i]`` microseconds. A quantile read back is the middle of its
bucket, so it is within ``(GAMMA - 1) / (GAMMA + 1)`` (about 4.8%) of the true value,
whatever the distribution and however many durations were added. 1 µs to an hour takes
232 buckets of 8 bytes: 1.9 kB per sketch. Durations outside that range count in the
first or last bucket.

Why not a reservoir of samples: a 128-sample reservoir's p95 rests on the 6 or 7 samples
above it, so it swings by tens of percent from one read to the next, needs a random draw
per duration, and two reservoirs cannot be merged exactly. Buckets merge by addition,
which is what folding an evicted fingerprint into the "other" entry needs, and adding a
duration is a logarithm and an increment.
"""

from __future__ import annotations

import math
from array import array
from typing import Final

__all__ = ["GAMMA", "RELATIVE_ERROR", "LatencySketch"]

GAMMA: Final = 1.1
RELATIVE_ERROR: Final = (GAMMA - 1) / (GAMMA + 1)
_MIN_US: Final = 1.0
_BUCKETS: Final = 232  # GAMMA**231 µs ≈ 1 h
_INV_LOG_GAMMA: Final = 1 / math.log(GAMMA)


class LatencySketch:
    """Counts of durations per bucket; :meth:`quantile` reads one back (±4.8%).

    Not thread-safe: the owner serialises :meth:`add` and :meth:`merge`.
    """

    __slots__ = ("_counts", "count")

    def __init__(self) -> None:
        self._counts = array("Q", bytes(8 * _BUCKETS))
        self.count = 0

    def add(self, seconds: float) -> None:
        """Count one duration."""
        micros = seconds * 1_000_000
        if micros <= _MIN_US:
            index = 0
        else:
            index = min(math.ceil(math.log(micros) * _INV_LOG_GAMMA), _BUCKETS - 1)
        self._counts[index] += 1
        self.count += 1

    def merge(self, other: LatencySketch) -> None:
        """Add every duration ``other`` counted to this sketch."""
        counts = self._counts
        for index, value in enumerate(other._counts):
            if value:
                counts[index] += value
        self.count += other.count

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0 < q ≤ 1) in seconds; 0.0 for an empty sketch."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, value in enumerate(self._counts):
            seen += value
            if seen >= rank:
                return _bucket_value(index) / 1_000_000
        return _bucket_value(_BUCKETS - 1) / 1_000_000  # unreachable: counts add up

    @staticmethod
    def size_bytes() -> int:
        """The memory its counts take (the same for every sketch)."""
        return 8 * _BUCKETS


def _bucket_value(index: int) -> float:
    """The middle of bucket ``index`` in µs (relative error at most RELATIVE_ERROR)."""
    if index == 0:
        return _MIN_US
    return 2 * GAMMA**index / (GAMMA + 1)
