"""A 4-bit count-min sketch: the frequency history behind the L1 cache's admission policy.

W-TinyLFU admits a new entry into the main space only when it has been asked for more often
than the entry it would push out.  Counting every key exactly would cost more memory than the
cache itself (most keys of a skewed workload are seen once), so this sketch keeps four
saturating 4-bit counters per key, spread over four rows, and answers with the minimum: it can
over-estimate (collisions) but never under-estimate.  Counts are halved every ``sample_size``
increments so that the history *ages*: a key that was popular an hour ago must not keep a
newcomer out forever.  The halving is one ``bytes.translate`` over the packed table, so it costs
a few microseconds even for a large cache.

Two counters share one byte (low nibble, high nibble).  Indexes come from double hashing of a
64-bit spread of ``hash(key)``; the spread is computed once per cache entry (``spread``) and the
sketch only ever sees that integer.  ``hash()`` of ``str``/``bytes`` is salted per process, which
also makes the counters hard to flood from outside with chosen colliding keys.
"""

from __future__ import annotations

__all__ = ["FrequencySketch", "spread"]

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15

# byte -> byte with both nibbles halved: the whole-table reset in one C call.
_HALVE = bytes((((b >> 5) << 4) | ((b & 0x0F) >> 1)) for b in range(256))


def spread(h: int) -> int:
    """Mix ``hash(key)`` into 64 well-distributed bits (``hash(int)`` is the int itself)."""
    h = (h * _GOLDEN) & _M64
    return h ^ (h >> 29)


class FrequencySketch:
    """Four rows of ``width`` 4-bit saturating counters (count-min), aged by periodic halving.

    Not thread-safe: it is only touched by the owning cache's maintenance code.
    """

    __slots__ = ("_mask", "_sample_size", "_size", "_table", "_width")

    def __init__(self, capacity: int, *, sample_factor: int = 10, width_factor: int = 4) -> None:
        """Size the table for ``capacity`` cache entries.

        ``width_factor`` counters per row per entry keep collisions rare (Caffeine uses about
        16 counters per entry in total, i.e. 4 per row); ``sample_factor`` x capacity increments
        between two halvings is the ageing period the TinyLFU paper recommends.
        """
        width = 16
        while width < max(1, capacity) * width_factor:
            width <<= 1
        self._width = width
        self._mask = width - 1
        self._table = bytearray(width * 2)  # 4 rows x width nibbles = width * 2 bytes
        self._sample_size = max(16, sample_factor * max(1, capacity))
        self._size = 0

    @property
    def sample_size(self) -> int:
        """Increments between two halvings."""
        return self._sample_size

    def frequency(self, h: int) -> int:
        """Estimated count (0..15) of the key whose spread hash is ``h``: the row minimum."""
        t = self._table
        mask = self._mask
        w = self._width
        h1 = h & 0xFFFFFFFF
        h2 = (h >> 32) | 1
        i = h1 & mask
        least = (t[i >> 1] >> ((i & 1) << 2)) & 15
        i = ((h1 + h2) & mask) + w
        v = (t[i >> 1] >> ((i & 1) << 2)) & 15
        if v < least:
            least = v
        i = ((h1 + 2 * h2) & mask) + 2 * w
        v = (t[i >> 1] >> ((i & 1) << 2)) & 15
        if v < least:
            least = v
        i = ((h1 + 3 * h2) & mask) + 3 * w
        v = (t[i >> 1] >> ((i & 1) << 2)) & 15
        if v < least:
            least = v
        return least

    def increment(self, h: int) -> None:
        """Count one access (conservative update: only the counters at the current minimum).

        Conservative update raises only the smallest of the four counters, which keeps a hot
        key that collides with a cold one from inflating the cold one's estimate; it is the
        cheapest accuracy gain a count-min sketch has.
        """
        t = self._table
        mask = self._mask
        w = self._width
        h1 = h & 0xFFFFFFFF
        h2 = (h >> 32) | 1
        i = h1 & mask
        b0 = i >> 1
        s0 = (i & 1) << 2
        v0 = (t[b0] >> s0) & 15
        i = ((h1 + h2) & mask) + w
        b1 = i >> 1
        s1 = (i & 1) << 2
        v1 = (t[b1] >> s1) & 15
        i = ((h1 + 2 * h2) & mask) + 2 * w
        b2 = i >> 1
        s2 = (i & 1) << 2
        v2 = (t[b2] >> s2) & 15
        i = ((h1 + 3 * h2) & mask) + 3 * w
        b3 = i >> 1
        s3 = (i & 1) << 2
        v3 = (t[b3] >> s3) & 15
        least = v0
        if v1 < least:
            least = v1
        if v2 < least:
            least = v2
        if v3 < least:
            least = v3
        if least == 15:
            return
        if v0 == least:
            t[b0] += 1 << s0
        if v1 == least:
            t[b1] += 1 << s1
        if v2 == least:
            t[b2] += 1 << s2
        if v3 == least:
            t[b3] += 1 << s3
        self._size += 1
        if self._size >= self._sample_size:
            self.halve()

    def halve(self) -> None:
        """Age the history: every counter is halved (one C-level pass over the table)."""
        self._table = self._table.translate(_HALVE)
        self._size //= 2

    def clear(self) -> None:
        """Forget everything (used by ``MemoryCache.clear``)."""
        self._table = bytearray(len(self._table))
        self._size = 0
