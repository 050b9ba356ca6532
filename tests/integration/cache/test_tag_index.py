"""The L2 tag index on real Redis: pattern invalidation spares it, no tag can reach it,
and an invalidation Redis refuses for good never wedges the replay queue."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from corestone.cache import EVERY_WORKSPACE
from corestone.resilience.events import State

from ._support import fresh_namespace, tiered, until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def namespace(redis_url: str) -> AsyncIterator[str]:
    async with fresh_namespace(redis_url) as name:
        yield name


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.Redis]:
    raw = redis.Redis.from_url(redis_url)
    yield raw
    await raw.aclose()


async def test_every_workspace_pattern_invalidation_keeps_tags_working(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """After invalidate_pattern(…, EVERY_WORKSPACE) a tag invalidation still reaches its entries."""
    async with tiered(redis_url, namespace) as a, tiered(redis_url, namespace) as b:
        await a.invalidate_tags(["entity:Task:1"], workspace=7)  # the tag has a generation
        await a.set("view:task-1", "old", tags=["entity:Task:1"], workspace=7)
        tag_set = a.keys.tag("entity:Task:1", workspace=7)
        assert await client.exists(tag_set, f"{tag_set}#gen") == 2

        # A bulk job across workspaces drops the model's rows (not the view) everywhere.
        await a.invalidate_pattern("entity:Task:*", workspace=EVERY_WORKSPACE)
        assert await client.exists(tag_set, f"{tag_set}#gen") == 2  # the index is intact

        await a.invalidate_tags(["entity:Task:1"], workspace=7)  # a later write to the task
        b.memory.clear()
        assert await b.get("view:task-1", workspace=7) is None  # not the stale view


async def test_a_tag_named_like_a_generation_counter_collides_with_nothing(
    redis_url: str, namespace: str
) -> None:
    """Tag ``X#gen`` must not be tag X's generation key: both stay usable, Redis stays used."""
    async with tiered(redis_url, namespace) as a, tiered(redis_url, namespace) as b:
        await a.set("plain", "p", tags=["X"])
        await a.invalidate_tags(["X"])  # X's generation counter now exists
        await a.set("odd", "o", tags=["X#gen"])
        await a.invalidate_tags(["X"])
        assert a.remote is not None
        assert a.remote.pending == 0  # nothing stuck in the replay queue
        b.memory.clear()
        assert await b.get("odd") == "o"  # X's invalidation did not touch tag X#gen
        await a.invalidate_tags(["X#gen"])
        b.memory.clear()
        assert await b.get("odd") is None
        await b.set("later", "still on Redis")
        a.memory.clear()
        assert await a.get("later") == "still on Redis"  # a reads L2, not wedged


async def test_an_invalidation_redis_refuses_for_good_is_dropped_for_a_flush(
    redis_url: str, namespace: str, client: redis.Redis
) -> None:
    """A WRONGTYPE during a queued replay drops the message, flushes the namespace, counts it."""
    async with tiered(redis_url, namespace) as a, tiered(redis_url, namespace) as b:
        await a.set("tagged", "old", tags=["T"])
        await a.set("other", "old too")
        await client.set(a.keys.tag("T"), b"not a set")  # a corrupt tag set: WRONGTYPE
        assert a.remote is not None
        a.remote.breaker.transition_to(State.FORCED_OPEN)  # Redis "away": the message queues
        await a.invalidate_tags(["T"])
        assert a.remote.pending > 0
        a.remote.breaker.transition_to(State.CLOSED)

        a.memory.clear()
        await a.get("anything")  # the replay runs before this L2 call
        await until(lambda: a.remote is not None and a.remote.pending == 0)
        assert a.stats.invalidations_dropped == 1
        b.memory.clear()
        assert await b.get("tagged") is None  # the flush removed what the tag would have
        assert await b.get("other") is None
        await b.set("later", "L2 works")
        a.memory.clear()
        assert await a.get("later") == "L2 works"
