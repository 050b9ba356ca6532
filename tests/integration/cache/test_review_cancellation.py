"""Cancellation at the L2 awaits of set, delete and a load holding the Redis lock, on real
Redis: nothing the caller already did locally may leave Redis or other instances stale,
and no lock may outlive its load."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as redis

from corestone.cache import TieredCache

from ._support import fresh_namespace, tiered, until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def namespace(redis_url: str) -> AsyncIterator[str]:
    async with fresh_namespace(redis_url) as name:
        yield name


def hang_first_call(
    target: Any, method: str
) -> tuple[asyncio.Event, Callable[..., Awaitable[Any]]]:
    """Make ``target.method`` hang on its first call (until cancelled); later calls pass."""
    entered = asyncio.Event()
    original = getattr(target, method)

    async def patched(*args: Any, **kwargs: Any) -> Any:
        if not entered.is_set():
            entered.set()
            await asyncio.Event().wait()
        return await original(*args, **kwargs)

    setattr(target, method, patched)
    return entered, original


async def cancel_when(entered: asyncio.Event, call: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(call)
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_delete_cancelled_at_its_redis_call_still_reaches_redis_and_peers(
    redis_url: str, namespace: str
) -> None:
    """A delete cancelled while Redis is being asked (after this instance dropped its L1
    copy) is still applied in Redis and announced, so no instance serves the old value."""
    async with tiered(redis_url, namespace) as a, tiered(redis_url, namespace) as b:
        await a.set("k", "old")
        await until(lambda: b.stats.invalidations_received >= 1)
        assert await b.get("k") == "old"  # b holds it in L1 now
        assert a.remote is not None
        entered, _ = hang_first_call(a.remote.store, "delete")
        await cancel_when(entered, a.delete("k"))
        full = a.key("k")
        await until(lambda: b.memory.get(full) is None)
        client = redis.Redis.from_url(redis_url)
        try:
            assert await client.exists(full) == 0
        finally:
            await client.aclose()


async def test_a_set_cancelled_at_its_redis_call_does_not_leave_peers_stale(
    redis_url: str, namespace: str
) -> None:
    """A set cancelled while Redis is being written (this instance already holds the new
    value) still makes every other instance drop the old one."""
    async with tiered(redis_url, namespace) as a, tiered(redis_url, namespace) as b:
        await a.set("k", "old")
        await until(lambda: b.stats.invalidations_received >= 1)
        assert await b.get("k") == "old"
        assert a.remote is not None
        entered, _ = hang_first_call(a.remote.store, "set")
        await cancel_when(entered, a.set("k", "new"))
        assert await a.get("k") == "new"
        await until(lambda: b.memory.get(b.key("k")) is None)
        assert await b.get("k") in (None, "new")


async def test_a_load_cancelled_right_after_taking_the_lock_releases_it(
    redis_url: str, namespace: str
) -> None:
    """Closing the cache while its flight holds the Redis lock (before the loader ran)
    frees the lock at once: its watchdog must not keep renewing it for nobody."""
    async with tiered(redis_url, namespace) as other:
        cache: TieredCache
        async with tiered(redis_url, namespace) as cache:
            assert cache.remote is not None
            store = cache.remote.store
            calls = 0
            entered = asyncio.Event()
            original_get = store.get

            async def get(key: str) -> Any:
                nonlocal calls
                calls += 1
                if calls == 2:  # the re-read of L2 once the lock is ours
                    entered.set()
                    await asyncio.Event().wait()
                return await original_get(key)

            store.get = get  # type: ignore[method-assign]

            async def never() -> str:
                raise AssertionError("the loader must not run")

            task = asyncio.ensure_future(
                cache.get_or_load("k", never, distributed_lock=True, lock_lease=0.6)
            )
            await entered.wait()
            lock_key = f"{cache.scope()}#lock:k"
            client = redis.Redis.from_url(redis_url)
            try:
                assert await client.exists(lock_key) == 1
            finally:
                await client.aclose()
        # cache closed: its flight was cancelled while holding the lock.
        with pytest.raises(Exception):  # noqa: B017, PT011 - the closing cache's error
            await task
        assert other.remote is not None
        await asyncio.sleep(0.8)  # past the lease: a live watchdog would have renewed it
        client = redis.Redis.from_url(redis_url)
        try:
            assert await client.exists(lock_key) == 0
        finally:
            await client.aclose()
