"""Invalidations overtaking loads, in one process (found by review; each test failed before)."""

from __future__ import annotations

import asyncio
import time

import pytest

from corestone.cache import TieredCache, cached
from corestone.errors import UnavailableError


async def test_a_failed_load_never_brings_back_a_deleted_stale_value() -> None:
    async with TieredCache() as cache:
        await cache.set("k", "old", ttl=0.05)
        await asyncio.sleep(0.1)  # stale, within max_stale

        async def failing() -> str:
            await asyncio.sleep(0.1)
            raise RuntimeError("db down")

        load = asyncio.create_task(cache.get_or_load("k", failing))
        await asyncio.sleep(0.02)
        await cache.delete("k")
        with pytest.raises(RuntimeError):
            await load  # the stale value was deleted: nothing to fall back on
        assert await cache.get("k") is None  # and no throttle entry brought it back


async def test_a_caller_after_an_invalidation_starts_a_fresh_load() -> None:
    async with TieredCache() as cache:
        gate = asyncio.Event()

        async def old_read() -> str:
            await gate.wait()
            return "read before the write"

        async def new_read() -> str:
            return "current"

        first = asyncio.create_task(cache.get_or_load("j", old_read))
        await asyncio.sleep(0.01)
        await cache.set("j", "v2")
        await cache.delete("j")
        second = asyncio.create_task(cache.get_or_load("j", new_read))
        await asyncio.sleep(0.01)
        gate.set()
        assert await second == "current"
        assert await first == "read before the write"  # answered, but not cached
        assert await cache.get("j") == "current"


async def test_generator_tags_are_read_once_and_kept() -> None:
    async with TieredCache() as cache:

        async def load() -> str:
            return "v"

        await cache.get_or_load("k", load, tags=(t for t in ["entity:T:1"]))
        await cache.invalidate_tags(["entity:T:1"])
        assert await cache.get("k") is None


async def test_a_load_from_a_snapshot_older_than_an_invalidation_is_not_stored() -> None:
    async with TieredCache() as cache:
        snapshot_taken = time.monotonic()
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

        assert await cache.get_or_load("k", read_fresh, not_before=time.monotonic()) == "new row"
        assert await cache.get("k") == "new row"


async def test_closing_the_cache_under_a_waiting_caller_is_not_its_cancellation() -> None:
    cache = TieredCache()
    await cache.start()

    async def slow() -> str:
        await asyncio.sleep(10)
        return "never"

    waiting = asyncio.create_task(cache.get_or_load("k", slow))
    await asyncio.sleep(0.01)
    await cache.aclose()
    with pytest.raises(UnavailableError):
        await waiting


async def test_cached_default_key_is_the_same_for_every_spelling_of_a_call() -> None:
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
