"""MemoryCache.add_many: a batch fill readable at once, its policy work on the loop's next turn."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from corestone.cache.memory import MemoryCache
from corestone.testing import ManualClock
from tests.unit.cache.test_memory import check_invariants


def _batch(n: int, *, ttl: float = 60.0, tags: tuple[str, ...] = ()) -> list[Any]:
    return [(f"k{i}", i, ttl, tags) for i in range(n)]


async def test_a_batch_fill_is_readable_at_once_and_bounded_once_the_loop_turns() -> None:
    """Entries of a batch fill are served before their bookkeeping, which the loop then does."""
    cache = MemoryCache(max_entries=10, clock=ManualClock())
    cache.add_many(_batch(50))
    assert cache.get("k49") == 49  # readable before any policy work
    assert len(cache) == 50  # over the bound until the buffer drains
    await asyncio.sleep(0)
    assert len(cache) <= 10
    check_invariants(cache)


def test_without_a_running_loop_the_batch_is_settled_at_once() -> None:
    """Outside an event loop nothing can drain later, so add_many leaves the cache settled."""
    cache = MemoryCache(max_entries=10, clock=ManualClock())
    cache.add_many(_batch(50))
    assert len(cache) <= 10
    check_invariants(cache)


async def test_tag_invalidation_reaches_entries_still_waiting_for_the_policy() -> None:
    """invalidate_tags right after a batch fill removes every entry of that batch."""
    cache = MemoryCache(max_entries=1000, clock=ManualClock())
    cache.add_many(_batch(20, tags=("t", "t")))
    assert cache.invalidate_tags(["t"]) == 20
    assert len(cache) == 0
    await asyncio.sleep(0)
    check_invariants(cache)


async def test_writes_removals_reads_and_clear_keep_the_cache_consistent() -> None:
    """Every other operation on a cache with a waiting batch sees it settled first."""
    clock = ManualClock()
    evicted: list[tuple[Hashable, Any, str]] = []
    cache = MemoryCache(
        max_entries=1000, clock=clock, on_evict=lambda k, v, r: evicted.append((k, v, r))
    )
    cache.add_many(_batch(5))
    cache.get("k0")  # a buffered read of a node the policy has not seen yet
    assert cache.set("k1", "new") is True
    assert cache.delete("k2") is True
    assert cache.delete_many(["k3"]) == 1
    check_invariants(cache)
    cache.add_many([("k0", "again", 60.0, ()), ("k9", 9, 60.0, ())])  # k0 is present: updated
    assert cache.get("k0") == "again"
    clock.advance(61)
    assert cache.get("k9") is None  # expired while waiting: a miss, removed consistently
    check_invariants(cache)
    cache.add_many(_batch(3))
    assert cache.clear() >= 3
    assert {key for key, _, reason in evicted if reason == "cleared"} >= {"k0", "k1", "k2"}
    await asyncio.sleep(0)
    assert len(cache) == 0
    check_invariants(cache)


async def test_a_weigher_that_refuses_later_drops_the_entry() -> None:
    """With a byte bound, an entry heavier than the bound never stays once weighed."""
    cache = MemoryCache(max_entries=100, max_bytes=100, weigher=lambda k, v: v, clock=ManualClock())
    cache.add_many([("light", 10, 60.0, ()), ("heavy", 1000, 60.0, ()), ("bad", -1, 60.0, ())])
    await asyncio.sleep(0)
    assert cache.get("light") == 10
    assert cache.get("heavy") is None
    assert cache.get("bad") is None
    assert cache.stats.rejections == 2
    check_invariants(cache)


async def test_a_long_buffer_drains_inline() -> None:
    """Past its bound the write buffer is drained by the filling call itself."""
    cache = MemoryCache(max_entries=100, clock=ManualClock())
    cache.add_many(_batch(2000))
    assert len(cache) <= 100
    check_invariants(cache)
