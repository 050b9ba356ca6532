"""Helpers for the cache's Redis tests: a started cache, waiting on a condition, cleanup."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from corestone.cache import CacheOptions, MemoryCache, TieredCache
from corestone.resilience import BreakerRegistry


@asynccontextmanager
async def tiered(url: str, namespace: str, *, ttl: float = 300) -> AsyncIterator[TieredCache]:
    """A TieredCache on ``url`` with its own breaker, started and subscribed."""
    async with TieredCache.from_url(
        url,
        namespace=namespace,
        breakers=BreakerRegistry(),
        options=CacheOptions(ttl=ttl),
        memory=MemoryCache(max_entries=10_000),
    ) as cache:
        await until(lambda: cache.backplane.connected)
        yield cache


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for ``condition`` (polling); fail the test if it does not hold in time."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@asynccontextmanager
async def fresh_namespace(url: str) -> AsyncIterator[str]:
    """A namespace of its own, whose keys are deleted afterwards."""
    import redis.asyncio as redis

    name = f"t{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        client = redis.Redis.from_url(url)
        keys = [key async for key in client.scan_iter(match=f"corestone:{name}:*")]
        if keys:
            await client.unlink(*keys)
        await client.aclose()
