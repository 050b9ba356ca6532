"""The L1 timer wheel: entries bucketed by the second of their deadline.

A heap of bucket ids says which second comes due next, so expiring what is due never
scans the whole map: a write removes a bounded number of due entries, ``cleanup()`` all
of them. An emptied bucket stays until its second passes, so each id is in the heap
exactly once while its set is in the dict.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Final

from corestone.cache._node import Node

__all__ = ["RESOLUTION", "TimerWheel"]

RESOLUTION: Final = 1.0
"""Seconds of deadline per bucket."""


class TimerWheel:
    """Deadlines of the L1 entries that expire; not thread-safe (one event loop)."""

    __slots__ = ("_buckets", "heap")

    def __init__(self) -> None:
        self._buckets: dict[int, set[Node]] = {}
        self.heap: list[int] = []  # read by the cache: ``heap[0]`` is the next due second

    def schedule(self, node: Node) -> None:
        assert node.expires is not None
        bucket_id = int(node.expires // RESOLUTION)
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            bucket = self._buckets[bucket_id] = set()
            heapq.heappush(self.heap, bucket_id)
        bucket.add(node)
        node.bucket = bucket_id

    def unschedule(self, node: Node) -> None:
        if node.bucket is not None:
            bucket = self._buckets.get(node.bucket)
            if bucket is not None:
                bucket.discard(node)
            node.bucket = None

    def expire_due(self, now: float, budget: int | None, remove: Callable[[Node], None]) -> int:
        """``remove`` the entries of buckets whose whole second has passed (``budget`` at most)."""
        heap = self.heap
        limit = int(now // RESOLUTION)
        removed = 0
        buckets = self._buckets
        while heap and heap[0] < limit:
            bucket = buckets[heap[0]]
            while bucket:
                if budget is not None and removed >= budget:
                    return removed
                node = bucket.pop()
                node.bucket = None
                remove(node)
                removed += 1
            del buckets[heapq.heappop(heap)]
        return removed

    def due_now(self, now: float) -> list[Node]:
        """The entries of the current, partly due bucket whose deadline has passed."""
        heap = self.heap
        if not heap or heap[0] != now // RESOLUTION:
            return []
        return [n for n in self._buckets[heap[0]] if n.expires is not None and n.expires <= now]

    def clear(self) -> None:
        self._buckets.clear()
        self.heap.clear()
