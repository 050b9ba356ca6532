"""Hit ratio of the L1 policy (W-TinyLFU) against LRU and a perfect-count LFU, same capacity.

Used by ``bench/cache.py``; also runnable alone:
``uv run python -m bench._cache_hitratio [--quick]``.

Two seeded traces over 100,000 keys, capacity 1 % (1,000 entries):

* ``zipf``: Zipf(1.0) popularity (probability of the key of rank r proportional to 1/r);
* ``zipf_scan``: the same, with 30 % of the requests replaced by keys that occur exactly once
  (a scan / crawler / one-off report mixed into the hot traffic).

Every policy sees the trace as a cache-aside client would: ``get``; on a miss, ``set``.  The
references: an ``OrderedDict`` LRU, and *perfect LFU* — exact counts of every key ever seen
(also of evicted ones), the cache holds the most-counted keys and a newcomer replaces the
least-counted resident only when its count is higher.  That is the in-trace ideal a frequency
sketch approximates (it is "offline" only in that no real cache can afford its unbounded
count table); W-TinyLFU should come close to it and well above LRU.
"""

from __future__ import annotations

import heapq
import itertools
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from corestone.cache.memory import MemoryCache

KEYS = 100_000
CAPACITY = 1_000
ONE_TIME_SHARE = 0.30
SEED = 20261126

__all__ = ["hit_ratios", "lfu_hit_ratio", "lru_hit_ratio", "memory_hit_ratio", "zipf_trace"]


def zipf_trace(
    length: int, *, keys: int = KEYS, one_time_share: float = 0.0, seed: int = SEED
) -> list[int]:
    """``length`` requests, key ranks drawn from Zipf(1.0) over ``keys`` keys (seeded).

    With ``one_time_share`` > 0, that share of the requests (chosen at random) is a fresh key
    (numbered from ``keys`` upwards) that never occurs again.
    """
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(1.0 / rank for rank in range(1, keys + 1)))
    trace = rng.choices(range(keys), cum_weights=cumulative, k=length)
    if one_time_share > 0:
        fresh = itertools.count(keys)
        for i in range(length):
            if rng.random() < one_time_share:
                trace[i] = next(fresh)
    return trace


def memory_hit_ratio(trace: Iterable[int], capacity: int = CAPACITY) -> float:
    """Hit ratio (percent) of ``MemoryCache`` (W-TinyLFU) bounded to ``capacity`` entries."""
    cache = MemoryCache(max_entries=capacity)
    get = cache.get
    put = cache.set
    hits = requests = 0
    for key in trace:
        requests += 1
        if get(key) is None:
            put(key, True)
        else:
            hits += 1
    return 100.0 * hits / requests


def lru_hit_ratio(trace: Iterable[int], capacity: int = CAPACITY) -> float:
    """Hit ratio (percent) of a plain LRU (``OrderedDict``) of ``capacity`` entries."""
    cache: OrderedDict[int, bool] = OrderedDict()
    hits = requests = 0
    for key in trace:
        requests += 1
        if key in cache:
            hits += 1
            cache.move_to_end(key)
        else:
            cache[key] = True
            if len(cache) > capacity:
                cache.popitem(last=False)
    return 100.0 * hits / requests


def lfu_hit_ratio(trace: Iterable[int], capacity: int = CAPACITY) -> float:
    """Hit ratio (percent) of perfect LFU: exact counts of every key, admission by count.

    A min-heap of ``(count, key)`` for the residents, updated lazily: a stale entry (count
    changed or key no longer resident) is discarded when it surfaces.
    """
    counts: dict[int, int] = {}
    resident: set[int] = set()
    heap: list[tuple[int, int]] = []
    hits = requests = 0
    for key in trace:
        requests += 1
        count = counts.get(key, 0) + 1
        counts[key] = count
        if key in resident:
            hits += 1
            heapq.heappush(heap, (count, key))
            continue
        if len(resident) < capacity:
            resident.add(key)
            heapq.heappush(heap, (count, key))
            continue
        while True:  # the least-counted resident, skipping stale heap entries
            least, victim = heap[0]
            if victim in resident and counts[victim] == least:
                break
            heapq.heappop(heap)
        if count > least:
            heapq.heappop(heap)
            resident.discard(victim)
            resident.add(key)
            heapq.heappush(heap, (count, key))
        if len(heap) > 8 * capacity:  # drop the stale entries now and then (amortised)
            heap = [(counts[k], k) for k in resident]
            heapq.heapify(heap)
    return 100.0 * hits / requests


def hit_ratios(quick: bool) -> dict[str, float]:
    """Hit ratios in percent, rounded to 0.01: ``{trace}_{memory|lru|lfu}_pct``.

    Full: 1,000,000 requests per trace; quick: 200,000 (same seeds, same keys).
    """
    length = 200_000 if quick else 1_000_000
    traces: dict[str, Sequence[int]] = {
        "zipf": zipf_trace(length),
        "zipf_scan": zipf_trace(length, one_time_share=ONE_TIME_SHARE),
    }
    result: dict[str, float] = {}
    for name, trace in traces.items():
        result[f"{name}_memory_pct"] = round(memory_hit_ratio(trace), 2)
        result[f"{name}_lru_pct"] = round(lru_hit_ratio(trace), 2)
        result[f"{name}_lfu_pct"] = round(lfu_hit_ratio(trace), 2)
    return result


if __name__ == "__main__":
    started = time.perf_counter()
    figures = hit_ratios("--quick" in sys.argv[1:])
    for label, figure in figures.items():
        print(f"{label:24s} {figure:6.2f}")
    for name in ("zipf", "zipf_scan"):
        gain = figures[f"{name}_memory_pct"] - figures[f"{name}_lru_pct"]
        print(f"{name}: memory - lru = {gain:+.2f} points")
    print(f"{time.perf_counter() - started:.1f} s")
