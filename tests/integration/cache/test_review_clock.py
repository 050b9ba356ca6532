"""A cache driven by a ManualClock on real Redis: an invalidation at the same clock reading
as a read (a coarse or manual clock) is ordered after it, never lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from corestone.cache import MemoryCache, TieredCache
from corestone.cache._build import redis_parts
from corestone.resilience import BreakerRegistry
from corestone.testing import ManualClock

from ._support import fresh_namespace, until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def namespace(redis_url: str) -> AsyncIterator[str]:
    async with fresh_namespace(redis_url) as name:
        yield name


@asynccontextmanager
async def manual_cache(url: str, namespace: str, clock: ManualClock) -> AsyncIterator[TieredCache]:
    parts = redis_parts(
        url,
        namespace=namespace,
        protocol=None,
        breakers=BreakerRegistry(),
        metrics=None,
        name="cache",
    )
    async with TieredCache(
        namespace=namespace,
        memory=MemoryCache(max_entries=100, clock=clock),
        store=parts.store,
        backplane=parts.backplane,
        breaker=parts.breaker,
        close=parts.close,
        clock=clock,
        wall_clock=clock,
    ) as cache:
        await until(lambda: cache.backplane.connected)
        yield cache


async def test_a_delete_during_an_l2_read_at_the_same_clock_reading_is_not_undone(
    redis_url: str, namespace: str
) -> None:
    """A read from Redis overtaken by a delete is not kept in L1, even when the clock did
    not move between the two (ManualClock; a coarse monotonic clock)."""
    clock = ManualClock(start=1_900_000_000.0)
    async with manual_cache(redis_url, namespace, clock) as cache:
        await cache.set("k", "old")
        cache.memory.clear()  # the next get reads Redis
        assert cache.remote is not None
        store = cache.remote.store
        entered, release = asyncio.Event(), asyncio.Event()
        original = store.get

        async def slow_get(key: str) -> Any:
            found = await original(key)  # read before the delete
            entered.set()
            await release.wait()
            return found

        store.get = slow_get  # type: ignore[method-assign]
        read = asyncio.create_task(cache.get("k"))
        await entered.wait()
        await cache.delete("k")
        release.set()
        assert await read == "old"  # concurrent with the delete: may answer the old value
        store.get = original  # type: ignore[method-assign]
        assert await cache.get("k") is None  # but never keep it
