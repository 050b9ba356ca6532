"""L1: the in-process cache — W-TinyLFU admission, read buffer, TTL wheel, tag index.

Why this design (see issue 5 and DESIGN §2):

* **Hit ratio.**  Plain LRU lets every one-off key push out a popular one.  W-TinyLFU (the
  policy of Caffeine) puts new entries in a small LRU *window* (1 % of the entries) and only
  lets an entry that falls out of the window into the *main* space (segmented LRU: probation
  20 %, protected 80 %) when a frequency sketch (``_sketch.FrequencySketch``) says it has
  been asked for more often than the main space's own victim.  On a skewed (Zipf) workload
  this keeps the hot set resident; under a scan, the one-time keys die in the window.

* **Hit path.**  ``get`` is a dict lookup, an expiry check, and an append of the entry to a
  bounded read buffer.  The policy work a read implies (a sketch increment, an LRU reorder,
  a probation -> protected promotion) is replayed from that buffer on the next write (or
  ``cleanup()``), never inside ``get``: replaying costs about a microsecond per read in
  Python, which would make the hit five times slower if reads paid for it.  The buffer's
  length doubles as the hit counter.  Like Caffeine's, the buffer is *lossy*: when
  ``_READ_BUFFER`` reads have piled up since the last write, further reads are counted but
  not recorded.  That only thins the frequency sample in read-only stretches, and those are
  exactly the stretches in which the policy has nothing to decide (evictions happen on
  writes, which replay the buffer first).

* **Expiry.**  Deadlines are kept in a bucketed timer wheel (one bucket per second of
  deadline, a heap of bucket ids).  Writes expire a bounded number of entries from the
  buckets whose second has passed; ``cleanup()`` empties all of them.  Nothing ever scans the
  whole map except the explicitly whole-map operations (``invalidate_matching``, ``clear``,
  ``keys``).  An expired entry is a miss even before the wheel gets to it.

* **Bounds.**  By entry count and, optionally, by approximate bytes (a weigher per entry).
  Under byte pressure the same frequency comparison picks which of the window's and the main
  space's victims goes.

**Not thread-safe, by design.**  The cache belongs to one asyncio event loop; none of its
methods awaits, so each runs atomically with respect to the loop's other tasks and needs no
lock (a lock would cost more than the hit itself).  Do not share an instance across threads.

``on_evict(key, value, reason)`` is called for every entry that leaves the cache, with reason
``"size"`` (bound reached), ``"expired"``, ``"deleted"`` (``delete``/``delete_many``/
``invalidate_tags``/``invalidate_matching``), ``"replaced"`` (a ``set`` over an existing key)
or ``"cleared"``.  Callbacks run only after the cache's state is consistent again, at the end
of the operation that removed the entries; an exception from a callback is logged and
swallowed, so a faulty callback can never leave the cache half-updated.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from corestone.cache._memory_weigher import default_weigher
from corestone.cache._sketch import FrequencySketch, spread

__all__ = ["EVICTION_REASONS", "MemoryCache", "MemoryStats", "default_weigher"]

_log = logging.getLogger("corestone.cache.memory")

#: Every reason ``on_evict`` can be called with.
EVICTION_REASONS: Final = ("size", "expired", "deleted", "replaced", "cleared")

_WINDOW: Final = 0
_PROBATION: Final = 1
_PROTECTED: Final = 2
_GONE: Final = -1

# Tuning (see bench/_cache_hitratio.py for the traces these were checked on).
_WINDOW_FRACTION: Final = 0.01  # share of the entries in the LRU admission window
_PROTECTED_FRACTION: Final = 0.80  # share of the main space that is protected
_READ_BUFFER: Final = 128  # reads recorded before the buffer is replayed into the policy
_EXPIRE_PER_WRITE: Final = 16  # expired entries a write removes at most (amortised cleanup)
_WHEEL_RESOLUTION: Final = 1.0  # seconds of deadline per timer-wheel bucket
_HASHDOS_THRESHOLD: Final = 6  # candidates at least this warm get a 1/128 admission lottery


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


class _Node:
    """One entry.  Slotted: attribute reads on the hit path are as cheap as list indexing."""

    __slots__ = ("bucket", "expires", "hash", "key", "seg", "tags", "value", "weight")

    def __init__(
        self,
        key: Hashable,
        value: Any,
        expires: float | None,
        weight: int,
        h: int,
        tags: tuple[str, ...],
    ) -> None:
        self.key = key
        self.value = value
        self.expires = expires
        self.weight = weight
        self.hash = h
        self.tags = tags
        self.seg = _WINDOW
        self.bucket: int | None = None


class MemoryCache:
    """Bounded in-process cache with W-TinyLFU admission; one event loop, no locks (see module)."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int | None = None,
        weigher: Callable[[Hashable, Any], int] | None = None,
        default_ttl: float | None = None,
        ttl_jitter: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[Hashable, Any, str], None] | None = None,
    ) -> None:
        """Create an empty cache.

        ``ttl_jitter`` is a fraction: 0.1 spreads each lifetime uniformly over ±10 %, so
        entries written together (a warm-up, a burst) do not all expire in the same instant
        and stampede the loader.  ``clock`` is injectable so tests can move time by hand.
        """
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0 or None")
        if not 0.0 <= ttl_jitter < 1.0:
            raise ValueError("ttl_jitter is a fraction in [0, 1)")
        if default_ttl is not None and default_ttl <= 0:
            raise ValueError("default_ttl must be > 0 or None")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        # Weighing is the costliest part of a set; without a byte bound nobody needs it
        # (weight_bytes then stays 0) unless a weigher is passed on purpose.
        if weigher is None and max_bytes is not None:
            weigher = default_weigher
        self._weigher = weigher
        self._default_ttl = default_ttl
        self._jitter = ttl_jitter
        self._clock = clock
        self._on_evict = on_evict

        window = max(1, round(max_entries * _WINDOW_FRACTION)) if max_entries else 0
        self._window_max = window
        self._main_max = max_entries - window
        self._protected_max = int(self._main_max * _PROTECTED_FRACTION)

        self._data: dict[Hashable, _Node] = {}
        self._window: OrderedDict[Hashable, _Node] = OrderedDict()
        self._probation: OrderedDict[Hashable, _Node] = OrderedDict()
        self._protected: OrderedDict[Hashable, _Node] = OrderedDict()
        self._reads: list[_Node] = []
        self._sketch = FrequencySketch(max(1, max_entries))
        self._rng = random.Random()  # noqa: S311 - admission lottery, not security
        self._tags: dict[str, set[Hashable]] = {}
        self._buckets: dict[int, set[_Node]] = {}
        self._bucket_heap: list[int] = []
        self._pending: list[tuple[Hashable, Any, str]] = []
        self._weight = 0

        self._hits = 0  # hits already replayed; the live figure adds len(self._reads)
        self._misses = 0
        self._sets = 0
        self._evictions = 0
        self._expirations = 0
        self._rejections = 0

    # ------------------------------------------------------------------ hot path

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value for ``key``, or ``default`` when absent or expired.  No policy work."""
        node = self._data.get(key)
        if node is None:
            self._misses += 1
            return default
        expires = node.expires
        if expires is not None and expires <= self._clock():
            self._expire_read(node)
            return default
        reads = self._reads
        if len(reads) < _READ_BUFFER:
            reads.append(node)
        else:
            self._hits += 1  # buffer full: the read is counted but not replayed (lossy)
        return node.value

    def __getitem__(self, key: Hashable) -> Any:
        """Like ``get`` but a miss raises ``KeyError``."""
        node = self._data.get(key)
        if node is None:
            self._misses += 1
            raise KeyError(key)
        expires = node.expires
        if expires is not None and expires <= self._clock():
            self._expire_read(node)
            raise KeyError(key)
        reads = self._reads
        if len(reads) < _READ_BUFFER:
            reads.append(node)
        else:
            self._hits += 1  # buffer full: the read is counted but not replayed (lossy)
        return node.value

    async def aget(self, key: Hashable, default: Any = None) -> Any:
        """``get`` for async call sites (same semantics; the body is inlined to save a call)."""
        node = self._data.get(key)
        if node is None:
            self._misses += 1
            return default
        expires = node.expires
        if expires is not None and expires <= self._clock():
            self._expire_read(node)
            return default
        reads = self._reads
        if len(reads) < _READ_BUFFER:
            reads.append(node)
        else:
            self._hits += 1  # buffer full: the read is counted but not replayed (lossy)
        return node.value

    def __contains__(self, key: object) -> bool:
        """Whether a live entry exists; not counted as a read (no hit, no frequency)."""
        node = self._data.get(key)
        if node is None:
            return False
        expires = node.expires
        return expires is None or expires > self._clock()

    def __len__(self) -> int:
        """Entries held, including expired ones the timer wheel has not removed yet."""
        return len(self._data)

    # ------------------------------------------------------------------ writes

    def set(
        self,
        key: Hashable,
        value: Any,
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> bool:
        """Store ``value``; returns whether it is in the cache afterwards.

        ``ttl`` (seconds, jittered) is the physical lifetime; ``None`` means ``default_ttl``
        and a ``None`` default (or ``math.inf``) means no expiry.  A ``ttl <= 0`` stores
        nothing (and drops the old value).  A single ``str`` for ``tags`` is one tag.  False
        also means the value was heavier than ``max_bytes``, or it was a newcomer the
        admission filter refused under byte pressure.
        """
        weigher = self._weigher
        weight = 0 if weigher is None else weigher(key, value)  # may raise: nothing touched yet
        if weight < 0:
            raise ValueError(f"weigher returned a negative weight ({weight}) for {key!r}")
        if isinstance(tags, str):  # "user:1" is one tag, not six one-letter tags
            tags = (tags,)
        tag_tuple = tuple(dict.fromkeys(tags)) if tags else ()
        if ttl is None:
            ttl = self._default_ttl
        elif not math.isfinite(ttl):
            if math.isnan(ttl):
                raise ValueError("ttl must be a number of seconds, not NaN")
            ttl = None if ttl > 0 else 0.0  # +inf: never expires; -inf: already expired
        now = self._clock()
        expires: float | None = None
        if ttl is not None:
            if self._jitter and ttl > 0:
                ttl *= 1.0 + self._jitter * (2.0 * self._rng.random() - 1.0)
            expires = now + ttl
        self._sets += 1
        try:
            if self._reads:
                self._drain_reads()
            heap = self._bucket_heap
            if heap and heap[0] < now // _WHEEL_RESOLUTION:
                self._expire_due(now, _EXPIRE_PER_WRITE)
            old = self._data.get(key)
            if (
                (expires is not None and expires <= now)
                or self._max_entries == 0
                or (self._max_bytes is not None and weight > self._max_bytes)
            ):
                if old is not None:
                    self._remove(old, "replaced")
                if expires is None or expires > now:
                    self._rejections += 1
                return False
            h = old.hash if old is not None else spread(hash(key))
            self._sketch.increment(h)
            if old is not None:
                self._update(old, value, expires, weight, tag_tuple)
            else:
                self._insert(_Node(key, value, expires, weight, h, tag_tuple))
            self._evict()
            return key in self._data
        finally:
            if self._pending:
                self._notify()

    def set_many(self, entries: Iterable[tuple[Hashable, Any, float | None, Iterable[str]]]) -> int:
        """Store ``(key, value, ttl, tags)`` entries as ``set`` would; the number stored.

        The per-write bookkeeping (read replay, expiry, the eviction pass) is done once for
        the batch instead of once per entry, which is what makes filling L1 from one L2
        ``MGET`` affordable. A ``ttl`` of ``None`` means ``default_ttl``.
        """
        batch = list(entries)
        if not batch:
            return 0
        weigher = self._weigher
        weights: list[int] = []
        for key, value, ttl, _tags in batch:  # weigh and check all before touching state
            if ttl is not None and math.isnan(ttl):
                raise ValueError("ttl must be a number of seconds, not NaN")
            weight = 0 if weigher is None else weigher(key, value)
            if weight < 0:
                raise ValueError(f"weigher returned a negative weight ({weight}) for {key!r}")
            weights.append(weight)
        now = self._clock()
        max_bytes = self._max_bytes
        increment = self._sketch.increment
        data = self._data
        stored: list[Hashable] = []
        try:
            if self._reads:
                self._drain_reads()
            heap = self._bucket_heap
            if heap and heap[0] < now // _WHEEL_RESOLUTION:
                self._expire_due(now, _EXPIRE_PER_WRITE)
            for (key, value, ttl, tags), weight in zip(batch, weights, strict=True):
                tag_tuple = (tags,) if isinstance(tags, str) else tuple(dict.fromkeys(tags))
                if ttl is None:
                    ttl = self._default_ttl
                expires = None
                if ttl is not None and math.isfinite(ttl):
                    if self._jitter and ttl > 0:
                        ttl *= 1.0 + self._jitter * (2.0 * self._rng.random() - 1.0)
                    expires = now + ttl
                elif ttl is not None and ttl < 0:
                    expires = now  # -inf: already expired
                self._sets += 1
                old = data.get(key)
                if (
                    (expires is not None and expires <= now)
                    or self._max_entries == 0
                    or (max_bytes is not None and weight > max_bytes)
                ):
                    if old is not None:
                        self._remove(old, "replaced")
                    if expires is None or expires > now:
                        self._rejections += 1
                    continue
                h = old.hash if old is not None else spread(hash(key))
                increment(h)
                if old is not None:
                    self._update(old, value, expires, weight, tag_tuple)
                else:
                    self._insert(_Node(key, value, expires, weight, h, tag_tuple))
                stored.append(key)
            self._evict()
            return sum(1 for key in stored if key in data)
        finally:
            if self._pending:
                self._notify()

    def delete(self, key: Hashable) -> bool:
        """Remove ``key``; True when a live (unexpired) entry was removed."""
        node = self._data.get(key)
        if node is None:
            return False
        try:
            return self._remove_explicit(node)
        finally:
            if self._pending:
                self._notify()

    def delete_many(self, keys: Iterable[Hashable]) -> int:
        """Remove each key; the number of live entries removed."""
        removed = 0
        try:
            for key in keys:
                node = self._data.get(key)
                if node is not None and self._remove_explicit(node):
                    removed += 1
        finally:
            if self._pending:
                self._notify()
        return removed

    def invalidate_tags(self, tags: Iterable[str]) -> int:
        """Remove every entry carrying any of ``tags`` (the tag index, no scan)."""
        victims: dict[Hashable, None] = {}
        for tag in tags:
            keys = self._tags.get(tag)
            if keys:
                victims.update(dict.fromkeys(keys))
        return self.delete_many(victims)

    def invalidate_matching(self, predicate: Callable[[Hashable], bool]) -> int:
        """Remove every entry whose key satisfies ``predicate`` (a full scan, by nature).

        Keys are collected before anything is removed, so a predicate that raises leaves the
        cache untouched.
        """
        return self.delete_many([key for key in self._data if predicate(key)])

    def clear(self) -> int:
        """Drop every entry (``on_evict`` reason ``"cleared"``); the frequency history stays.

        The sketch is kept on purpose: it describes which keys are asked for, which is still
        true after the values are dropped (e.g. the tiered cache clears L1 after a backplane
        outage, and the same hot keys come straight back).
        """
        self._drain_reads()
        nodes = list(self._data.values())
        for node in nodes:
            node.seg = _GONE
            node.bucket = None
        self._data.clear()
        self._window.clear()
        self._probation.clear()
        self._protected.clear()
        self._tags.clear()
        self._buckets.clear()
        self._bucket_heap.clear()
        self._weight = 0
        if self._on_evict is not None:
            self._pending.extend((node.key, node.value, "cleared") for node in nodes)
            self._notify()
        return len(nodes)

    def cleanup(self) -> int:
        """Remove every expired entry now; returns how many.

        Walks only the timer-wheel buckets whose time has come (plus the current, partially
        due bucket), never the whole map.
        """
        now = self._clock()
        try:
            self._drain_reads()
            removed = self._expire_due(now, None)
            heap = self._bucket_heap
            if heap and heap[0] == now // _WHEEL_RESOLUTION:  # the current, partly due bucket
                bucket = self._buckets[heap[0]]
                for node in [n for n in bucket if n.expires is not None and n.expires <= now]:
                    self._remove(node, "expired")
                    removed += 1
            return removed
        finally:
            if self._pending:
                self._notify()

    def keys(self) -> list[Hashable]:
        """The keys of the live (unexpired) entries, in no particular order."""
        now = self._clock()
        return [
            key for key, node in self._data.items() if node.expires is None or node.expires > now
        ]

    @property
    def stats(self) -> MemoryStats:
        """Counters since creation (``entries``/``weight_bytes``: current values)."""
        return MemoryStats(
            hits=self._hits + len(self._reads),
            misses=self._misses,
            sets=self._sets,
            evictions=self._evictions,
            expirations=self._expirations,
            rejections=self._rejections,
            entries=len(self._data),
            weight_bytes=self._weight,
        )

    @property
    def max_entries(self) -> int:
        """The entry bound given at construction."""
        return self._max_entries

    @property
    def max_bytes(self) -> int | None:
        """The byte bound given at construction (None: unbounded by bytes)."""
        return self._max_bytes

    # ------------------------------------------------------------------ policy internals

    def _drain_reads(self) -> None:
        """Replay buffered reads: sketch increments, LRU reorders, probation -> protected."""
        reads = self._reads
        if not reads:
            return
        self._hits += len(reads)
        increment = self._sketch.increment
        window = self._window
        probation = self._probation
        protected = self._protected
        protected_max = self._protected_max
        for node in reads:
            seg = node.seg
            if seg == _GONE:
                continue
            increment(node.hash)
            key = node.key
            if seg == _PROTECTED:
                protected.move_to_end(key)
            elif seg == _WINDOW:
                window.move_to_end(key)
            else:
                del probation[key]
                node.seg = _PROTECTED
                protected[key] = node
                if len(protected) > protected_max:
                    demoted_key, demoted = protected.popitem(last=False)
                    demoted.seg = _PROBATION
                    probation[demoted_key] = demoted
        reads.clear()

    def _insert(self, node: _Node) -> None:
        key = node.key
        self._data[key] = node
        self._window[key] = node
        self._weight += node.weight
        for tag in node.tags:
            keys = self._tags.get(tag)
            if keys is None:
                self._tags[tag] = {key}
            else:
                keys.add(key)
        if node.expires is not None:
            self._schedule(node)

    def _update(
        self,
        node: _Node,
        value: Any,
        expires: float | None,
        weight: int,
        tags: tuple[str, ...],
    ) -> None:
        """Overwrite in place: the entry keeps its segment (a write is an access)."""
        if self._on_evict is not None:
            self._pending.append((node.key, node.value, "replaced"))
        node.value = value
        self._weight += weight - node.weight
        node.weight = weight
        if node.tags != tags:
            key = node.key
            self._untag(node)
            node.tags = tags
            for tag in tags:
                keys = self._tags.get(tag)
                if keys is None:
                    self._tags[tag] = {key}
                else:
                    keys.add(key)
        if node.expires != expires:
            if (
                expires is not None
                and node.bucket is not None
                and node.bucket == expires // _WHEEL_RESOLUTION
            ):
                node.expires = expires  # same wheel bucket: nothing to move
            else:
                self._unschedule(node)
                node.expires = expires
                if expires is not None:
                    self._schedule(node)
        if node.seg == _WINDOW:
            self._window.move_to_end(node.key)
        elif node.seg == _PROTECTED:
            self._protected.move_to_end(node.key)
        else:
            self._probation.move_to_end(node.key)

    def _admit(self, candidate: _Node, victim: _Node) -> bool:
        """TinyLFU: let ``candidate`` replace ``victim`` only if it is asked for more often.

        Ties go to the incumbent.  A warm candidate that loses still gets a 1/128 chance
        (as in Caffeine): an attacker who floods the sketch so that one victim looks
        artificially hot cannot freeze the main space forever.
        """
        frequency = self._sketch.frequency
        candidate_freq = frequency(candidate.hash)
        victim_freq = frequency(victim.hash)
        if candidate_freq > victim_freq:
            return True
        if candidate_freq < _HASHDOS_THRESHOLD:
            return False
        return self._rng.random() < 1.0 / 128.0

    def _main_victim(self) -> _Node | None:
        if self._probation:
            return next(iter(self._probation.values()))
        if self._protected:
            return next(iter(self._protected.values()))
        return None

    def _evict(self) -> None:
        """Restore the bounds after an insert (window overflow first, then bytes)."""
        window = self._window
        probation = self._probation
        while len(window) > self._window_max:
            candidate = next(iter(window.values()))
            key = candidate.key
            if len(probation) + len(self._protected) < self._main_max:
                del window[key]
                candidate.seg = _PROBATION
                probation[key] = candidate
                continue
            victim = self._main_victim()
            if victim is not None and self._admit(candidate, victim):
                self._remove(victim, "size")
                del window[key]
                candidate.seg = _PROBATION
                probation[key] = candidate
            else:
                self._rejections += 1
                self._remove(candidate, "size")
        max_bytes = self._max_bytes
        if max_bytes is None:
            return
        while self._weight > max_bytes:
            main_victim = self._main_victim()
            window_victim = next(iter(window.values())) if window else None
            if window_victim is None:
                if main_victim is None:  # pragma: no cover - weight > 0 implies an entry
                    break
                self._remove(main_victim, "size")
            elif main_victim is not None and self._admit(window_victim, main_victim):
                self._remove(main_victim, "size")
            else:
                self._rejections += 1
                self._remove(window_victim, "size")

    # ------------------------------------------------------------------ removal & expiry

    def _remove(self, node: _Node, reason: str) -> None:
        """Unlink ``node`` from every structure; queue the callback (run at the end)."""
        key = node.key
        seg = node.seg
        if seg == _GONE:  # pragma: no cover - defensive: every caller passes a live node
            return
        del self._data[key]
        if seg == _WINDOW:
            del self._window[key]
        elif seg == _PROBATION:
            del self._probation[key]
        else:
            del self._protected[key]
        node.seg = _GONE
        self._weight -= node.weight
        if node.tags:
            self._untag(node)
        if node.bucket is not None:
            self._unschedule(node)
        if reason == "size":
            self._evictions += 1
        elif reason == "expired":
            self._expirations += 1
        if self._on_evict is not None:
            self._pending.append((key, node.value, reason))

    def _remove_explicit(self, node: _Node) -> bool:
        expires = node.expires
        if expires is not None and expires <= self._clock():
            self._remove(node, "expired")
            return False
        self._remove(node, "deleted")
        return True

    def _expire_read(self, node: _Node) -> None:
        """A read found ``node`` expired: count the miss and drop it (cheap, O(1))."""
        self._misses += 1
        self._remove(node, "expired")
        if self._pending:
            self._notify()

    def _untag(self, node: _Node) -> None:
        key = node.key
        index = self._tags
        for tag in node.tags:
            keys = index.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[tag]

    def _schedule(self, node: _Node) -> None:
        assert node.expires is not None
        bucket_id = int(node.expires // _WHEEL_RESOLUTION)
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            # Each bucket id is in the heap exactly once while its set is in the dict; an
            # emptied bucket stays until its second passes, so the heap never holds duplicates.
            bucket = self._buckets[bucket_id] = set()
            heapq.heappush(self._bucket_heap, bucket_id)
        bucket.add(node)
        node.bucket = bucket_id

    def _unschedule(self, node: _Node) -> None:
        if node.bucket is not None:
            bucket = self._buckets.get(node.bucket)
            if bucket is not None:
                bucket.discard(node)
            node.bucket = None

    def _expire_due(self, now: float, budget: int | None) -> int:
        """Remove entries of the buckets whose whole second has passed (at most ``budget``)."""
        heap = self._bucket_heap
        limit = int(now // _WHEEL_RESOLUTION)
        removed = 0
        buckets = self._buckets
        while heap and heap[0] < limit:
            bucket = buckets[heap[0]]
            while bucket:
                if budget is not None and removed >= budget:
                    return removed
                node = bucket.pop()
                node.bucket = None
                self._remove(node, "expired")
                removed += 1
            del buckets[heapq.heappop(heap)]
        return removed

    def _notify(self) -> None:
        """Run the queued ``on_evict`` callbacks; a raising callback is logged, not raised."""
        pending = self._pending
        self._pending = []
        callback = self._on_evict
        if callback is None:  # pragma: no cover - nothing is queued without a callback
            return
        for key, value, reason in pending:
            try:
                callback(key, value, reason)
            except Exception:  # noqa: BLE001 - a faulty callback must not break the cache
                _log.exception("on_evict callback failed for key %r (reason %s)", key, reason)
