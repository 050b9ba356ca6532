"""Invalidations overtaking loads, in one process (found by review; each test failed before)."""

from __future__ import annotations

import asyncio

import pytest

from corestone.cache import MemoryCache, TieredCache, cached
from corestone.errors import UnavailableError
from corestone.testing import ManualClock


def _cache(clock: ManualClock) -> TieredCache:
    return TieredCache(
        clock=clock, wall_clock=clock, memory=MemoryCache(max_entries=100, clock=clock)
    )


async def test_a_failed_load_never_brings_back_a_deleted_stale_value() -> None:
    """A deleted stale value is not served, nor put back by the fail-safe throttle."""
    clock = ManualClock()
    async with _cache(clock) as cache:
        await cache.set("k", "old", ttl=0.05)
        clock.advance(0.1)  # stale, within max_stale
        started, fail = asyncio.Event(), asyncio.Event()

        async def failing() -> str:
            started.set()
            await fail.wait()
            raise RuntimeError("db down")

        load = asyncio.create_task(cache.get_or_load("k", failing))
        await started.wait()
        await cache.delete("k")
        fail.set()
        with pytest.raises(RuntimeError):
            await load  # the stale value was deleted: nothing to fall back on
        assert await cache.get("k") is None  # and no throttle entry brought it back


async def test_a_caller_after_an_invalidation_starts_a_fresh_load() -> None:
    """A load overtaken by a write answers its callers but later callers load afresh."""
    async with TieredCache() as cache:
        gate, started = asyncio.Event(), asyncio.Event()

        async def old_read() -> str:
            started.set()
            await gate.wait()
            return "read before the write"

        async def new_read() -> str:
            return "current"

        first = asyncio.create_task(cache.get_or_load("j", old_read))
        await started.wait()
        await cache.set("j", "v2")
        await cache.delete("j")
        second = asyncio.create_task(cache.get_or_load("j", new_read))
        await asyncio.sleep(0)  # let the second caller start its own flight
        gate.set()
        assert await second == "current"
        assert await first == "read before the write"  # answered, but not cached
        assert await cache.get("j") == "current"


async def test_generator_tags_are_read_once_and_kept() -> None:
    """Tags given as a generator index the entry (read once, not exhausted before the store)."""
    async with TieredCache() as cache:

        async def load() -> str:
            return "v"

        await cache.get_or_load("k", load, tags=(t for t in ["entity:T:1"]))
        await cache.invalidate_tags(["entity:T:1"])
        assert await cache.get("k") is None


async def test_a_load_from_a_snapshot_older_than_an_invalidation_is_not_stored() -> None:
    """``not_before`` older than a local invalidation of a tag: returned, never stored."""
    clock = ManualClock()
    async with _cache(clock) as cache:
        snapshot_taken = cache.clock()
        clock.advance(0.001)
        await cache.invalidate_tags(["entity:T:1"])  # a commit after the snapshot

        async def read_snapshot() -> str:
            return "old row"

        value = await cache.get_or_load(
            "k", read_snapshot, tags=["entity:T:1"], not_before=snapshot_taken
        )
        assert value == "old row"
        assert await cache.get("k") is None

        async def read_fresh() -> str:
            return "new row"

        clock.advance(0.001)
        assert await cache.get_or_load("k", read_fresh, not_before=cache.clock()) == "new row"
        assert await cache.get("k") == "new row"


async def test_closing_the_cache_under_a_waiting_caller_is_not_its_cancellation() -> None:
    """A caller whose load is cancelled by aclose gets UnavailableError, not CancelledError."""
    cache = TieredCache()
    await cache.start()
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.Event().wait()  # never set: only the close ends it
        return "never"

    waiting = asyncio.create_task(cache.get_or_load("k", slow))
    await started.wait()
    await cache.aclose()
    with pytest.raises(UnavailableError):
        await waiting


async def test_cached_default_key_is_the_same_for_every_spelling_of_a_call() -> None:
    """``f(7)``, ``f(user_id=7)`` and ``f(7, False)`` are one call, so one entry."""
    async with TieredCache() as cache:
        calls: list[int] = []

        @cached(cache)
        async def profile(user_id: int, verbose: bool = False) -> int:
            calls.append(user_id)
            return user_id

        await profile(7)
        await profile(user_id=7)
        await profile(7, False)
        assert calls == [7]
        await profile.invalidate(user_id=7)  # type: ignore[attr-defined]
        await profile(7)
        assert calls == [7, 7]
