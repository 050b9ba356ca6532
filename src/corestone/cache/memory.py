"""L1: the in-process cache — W-TinyLFU admission, a lossy read buffer, TTL wheel, tag index.

Why it is built this way (admission, the read buffer, the wheel, the bounds) is recorded in
docs/decisions (the L1 design record); the timer wheel and the tag index are their own
modules (``_wheel``, ``_tag_index``).

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

import logging
import math
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final

from corestone.cache._memory_stats import MemoryStats
from corestone.cache._memory_weigher import default_weigher
from corestone.cache._node import GONE as _GONE
from corestone.cache._node import Node as _Node
from corestone.cache._segments import Segments
from corestone.cache._sketch import spread
from corestone.cache._tag_index import TagIndex
from corestone.cache._wheel import RESOLUTION as _WHEEL_RESOLUTION
from corestone.cache._wheel import TimerWheel
from corestone.cache._write_buffer import WriteBuffer
from corestone.clock import Clock, monotonic

__all__ = ["EVICTION_REASONS", "MemoryCache", "MemoryStats", "default_weigher"]

_log = logging.getLogger("corestone.cache.memory")

#: Every reason ``on_evict`` can be called with.
EVICTION_REASONS: Final = ("size", "expired", "deleted", "replaced", "cleared")

# Tuning (see bench/_cache_hitratio.py for the traces these were checked on).
_READ_BUFFER: Final = 128  # reads recorded before the buffer is replayed into the policy
_EXPIRE_PER_WRITE: Final = 16  # expired entries a write removes at most (amortised cleanup)
_ABSENT: Final = object()
_INF: Final = math.inf
_WRITE_BUFFER: Final = 1024  # batch-filled entries whose policy work may wait (see add_many)


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
        clock: Clock = monotonic,
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

        self._data: dict[Hashable, _Node] = {}
        self._segments = Segments(max_entries)
        self._window = self._segments.window  # direct references: read on every write
        self._sketch = self._segments.sketch
        self._rng = self._segments.rng
        self._reads: list[_Node] = []
        self._writes = WriteBuffer(self._drain_writes, _WRITE_BUFFER)  # see add_many
        self._tags = TagIndex()
        self._wheel = TimerWheel()
        self._bucket_heap = self._wheel.heap  # the next due second, read on every write
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
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)
        return value

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
        return self.set_many(((key, value, ttl, tags),)) == 1

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
            self._drain_writes()
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

    def add_many(self, entries: Iterable[tuple[Hashable, Any, float, tuple[str, ...]]]) -> None:
        """Store ``(key, value, ttl, tags)`` entries now and do their policy work soon.

        For filling L1 from one L2 batch read: each entry can be read at once; admission,
        weighing, the tag index and the expiry wheel catch up on the event loop's next turn
        or before any other write or removal here (see ``_write_buffer``), so the cache may
        briefly hold up to ``_WRITE_BUFFER`` entries over its bound. Keys already present,
        and a ``ttl`` that is not a positive finite number, take the ``set_many`` path. A
        weigher that fails or refuses an entry when it is weighed later drops it.
        """
        data = self._data
        writes = self._writes.nodes
        waiting = len(writes)
        keep = writes.append
        jitter = self._jitter
        expires_base = self._clock()
        others: list[tuple[Hashable, Any, float | None, Iterable[str]]] = []
        if self._max_entries == 0:
            others.extend(entries)
            entries = ()
        for key, value, ttl, tags in entries:
            if key in data or not 0.0 < ttl < _INF:
                others.append((key, value, ttl, tags))
                continue
            if jitter:
                ttl *= 1.0 + jitter * (2.0 * self._rng.random() - 1.0)
            data[key] = node = _Node(key, value, expires_base + ttl, 0, 0, tags)
            keep(node)
        self._sets += len(writes) - waiting
        if others:
            self.set_many(others)  # drains the buffer first
        self._writes.added()

    def delete(self, key: Hashable) -> bool:
        """Remove ``key``; True when a live (unexpired) entry was removed."""
        self._drain_writes()
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
        self._drain_writes()
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
        self._drain_writes()
        return self.delete_many(self._tags.keys_of(tags))

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
        self._segments.clear()
        self._tags.clear()
        self._wheel.clear()
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
            for node in self._wheel.due_now(now):  # the current, partly due bucket
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

    def _drain_writes(self) -> None:
        """Do the policy work ``add_many`` left for later (the nodes are in ``_data``)."""
        if not self._writes.nodes:
            return
        nodes = self._writes.take()
        weigher = self._weigher
        max_bytes = self._max_bytes
        increment = self._sketch.increment
        try:
            for node in nodes:
                if weigher is not None:
                    try:
                        node.weight = weigher(node.key, node.value)
                    except Exception:  # noqa: BLE001 - nobody to raise to: refuse the entry
                        _log.exception("weigher failed for key %r", node.key)
                        node.weight = -1
                    if node.weight < 0 or (max_bytes is not None and node.weight > max_bytes):
                        del self._data[node.key]
                        node.seg = _GONE
                        self._rejections += 1
                        continue
                node.hash = spread(hash(node.key))
                increment(node.hash)
                if node.tags:
                    node.tags = tuple(dict.fromkeys(node.tags))
                self._insert(node)
            self._evict()
        finally:
            if self._pending:
                self._notify()

    def _drain_reads(self) -> None:
        """Replay buffered reads into the policy (see ``Segments.replay``)."""
        self._drain_writes()  # a buffered read may be of a node the policy has not seen
        reads = self._reads
        if not reads:
            return
        self._hits += len(reads)
        self._segments.replay(reads)
        reads.clear()

    def _insert(self, node: _Node) -> None:
        key = node.key
        self._data[key] = node
        self._window[key] = node
        self._weight += node.weight
        if node.tags:
            self._tags.add(key, node.tags)
        if node.expires is not None:
            self._wheel.schedule(node)

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
            self._tags.discard(node.key, node.tags)
            node.tags = tags
            self._tags.add(node.key, tags)
        if node.expires != expires:
            if (
                expires is not None
                and node.bucket is not None
                and node.bucket == expires // _WHEEL_RESOLUTION
            ):
                node.expires = expires  # same wheel bucket: nothing to move
            else:
                self._wheel.unschedule(node)
                node.expires = expires
                if expires is not None:
                    self._wheel.schedule(node)
        self._segments.touch(node)

    def _evict(self) -> None:
        """Restore the bounds after an insert (window overflow first, then bytes)."""
        segments = self._segments
        if len(self._window) > segments.window_max:
            self._rejections += segments.overflow(self._remove_for_size)
        max_bytes = self._max_bytes
        if max_bytes is None:
            return
        while self._weight > max_bytes:
            victim, refused = segments.byte_victim()
            if victim is None:  # pragma: no cover - weight > 0 implies an entry
                break
            if refused:
                self._rejections += 1
            self._remove(victim, "size")

    def _remove_for_size(self, node: _Node) -> None:
        self._remove(node, "size")

    # ------------------------------------------------------------------ removal & expiry

    def _remove(self, node: _Node, reason: str) -> None:
        """Unlink ``node`` from every structure; queue the callback (run at the end)."""
        key = node.key
        seg = node.seg
        if seg == _GONE:  # pragma: no cover - defensive: every caller passes a live node
            return
        del self._data[key]
        self._segments.unlink(node)
        self._weight -= node.weight
        if node.tags:
            self._tags.discard(key, node.tags)
        if node.bucket is not None:
            self._wheel.unschedule(node)
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
        self._drain_writes()
        self._misses += 1
        self._remove(node, "expired")
        if self._pending:
            self._notify()

    def _expire_due(self, now: float, budget: int | None) -> int:
        return self._wheel.expire_due(now, budget, self._remove_expired)

    def _remove_expired(self, node: _Node) -> None:
        self._remove(node, "expired")

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
