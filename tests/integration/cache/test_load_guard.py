"""What a load may store, on real Redis: tag generations read before the loader, and a
snapshot older than another instance's invalidation never cached (``not_before``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from ._support import fresh_namespace, tiered

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def namespace(redis_url: str) -> AsyncIterator[str]:
    async with fresh_namespace(redis_url) as name:
        yield name


async def test_a_snapshot_older_than_a_remote_invalidation_is_not_stored(
    redis_url: str, namespace: str
) -> None:
    """Another instance invalidated the tag after the snapshot began, its message is late:
    the load's generations (read later) must not vouch for the old row."""
    async with tiered(redis_url, namespace) as a, tiered(redis_url, namespace) as b:
        snapshot_began = time.monotonic()  # a's transaction starts: it sees the old row
        assert b.remote is not None
        # b commits and invalidates in Redis; a is not told (the backplane is late).
        await b.remote.store.invalidate_tags([b.keys.tag("entity:T:1")])

        async def read_old_row() -> str:
            return "old row"  # from the snapshot that predates b's commit

        value = await a.get_or_load(
            "task:1", read_old_row, tags=["entity:T:1"], not_before=snapshot_began
        )
        assert value == "old row"  # the caller gets what its transaction saw …
        a.memory.clear()
        b.memory.clear()
        assert await a.get("task:1") is None  # … but neither tier keeps it
        assert await b.get("task:1") is None


async def test_a_snapshot_newer_than_every_invalidation_is_stored(
    redis_url: str, namespace: str
) -> None:
    """``not_before`` refuses only what may predate an invalidation, not every load."""
    async with tiered(redis_url, namespace) as a, tiered(redis_url, namespace) as b:
        assert b.remote is not None
        await b.remote.store.invalidate_tags([b.keys.tag("entity:T:1")])
        # Well after the commit (the check is conservative by one Redis round trip).
        await asyncio.sleep(0.02)
        snapshot_began = time.monotonic()

        async def read_new_row() -> str:
            return "new row"

        await a.get_or_load("task:1", read_new_row, tags=["entity:T:1"], not_before=snapshot_began)
        b.memory.clear()
        assert await b.get("task:1") == "new row"


async def test_generations_are_read_before_the_loader_runs(redis_url: str, namespace: str) -> None:
    """An invalidation on another instance while the loader runs refuses the store."""
    async with tiered(redis_url, namespace) as a, tiered(redis_url, namespace) as b:
        assert b.remote is not None

        async def load_while_another_instance_commits() -> str:
            await b.remote.store.invalidate_tags([b.keys.tag("entity:T:1")])  # type: ignore[union-attr]
            return "read before the commit"

        await a.get_or_load("task:1", load_while_another_instance_commits, tags=["entity:T:1"])
        assert a.stats.stores_refused == 1
        b.memory.clear()
        assert await b.get("task:1") is None
