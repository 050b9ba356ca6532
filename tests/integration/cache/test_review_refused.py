"""A tag invalidation Redis refuses for good (a corrupt tag key) costs one namespace flush,
not one per later invalidation of that tag."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from ._support import fresh_namespace, tiered, until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def namespace(redis_url: str) -> AsyncIterator[str]:
    async with fresh_namespace(redis_url) as name:
        yield name


async def test_a_corrupt_tag_key_is_repaired_by_the_flush_it_caused(
    redis_url: str, namespace: str
) -> None:
    """After the flush that replaced a refused tag invalidation, the tag works again: its
    next invalidation reaches its entries instead of flushing the whole namespace again."""
    async with tiered(redis_url, namespace) as cache:
        client = redis.Redis.from_url(redis_url)
        try:
            await client.set(cache.keys.tag("hot", "w1"), b"not a set")  # corrupt
            await cache.invalidate_tags(["hot"], workspace="w1")
            assert cache.stats.invalidations_dropped == 1
            assert cache.remote is not None
            remote = cache.remote
            await until(lambda: remote.pending == 0)
            await cache.set("k", "v", tags=["hot"], workspace="w1")
            await cache.set("other", "kept", workspace="w2")
            await cache.invalidate_tags(["hot"], workspace="w1")
            assert cache.stats.invalidations_dropped == 1  # no second refusal, no flush
            cache.memory.clear()
            assert await cache.get("k", workspace="w1") is None
            assert await cache.get("other", workspace="w2") == "kept"
        finally:
            await client.aclose()
