"""RedisLock against a real Redis, over RESP2 and RESP3 clients."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis

from corestone.cache.lock import RedisLock


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
async def env(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, str]]:
    client = redis.Redis.from_url(redis_url, protocol=request.param)
    key = f"cstest:{uuid.uuid4().hex}:lock"
    try:
        yield client, key
    finally:
        await client.unlink(key)
        await client.aclose()


async def test_mutual_exclusion_across_50_concurrent_acquirers(
    env: tuple[Any, str], redis_url: str
) -> None:
    """50 acquirers on two clients each get the lock, never two at once; the key is gone after."""
    client, key = env
    # A second client too, so exclusion does not rest on sharing a connection pool.
    other = redis.Redis.from_url(redis_url)
    inside = 0
    peak = 0
    done = 0

    async def worker(i: int) -> None:
        nonlocal inside, peak, done
        lock = RedisLock(client if i % 2 else other, key, lease=5, poll_max=0.02)
        assert await lock.acquire(wait=None)
        try:
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.002)
            inside -= 1
            done += 1
        finally:
            assert await lock.release()

    try:
        await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(50))), timeout=60)
    finally:
        await other.aclose()
    assert done == 50
    assert peak == 1
    assert await client.exists(key) == 0


async def test_release_after_expiry_cannot_free_someone_elses_lock(env: tuple[Any, str]) -> None:
    """A holder whose lease lapsed cannot release or extend the lock a second holder took since."""
    client, key = env
    first = RedisLock(client, key, lease=0.1, watchdog=False)
    assert await first.acquire()
    assert first.held
    await asyncio.sleep(0.25)  # first's lease lapses (no watchdog: the lease is a hard limit)
    assert not first.held
    second = RedisLock(client, key, lease=5)
    assert await second.acquire()
    assert await first.release() is False
    assert await first.extend() is False
    assert second.held
    assert await client.exists(key) == 1
    third = RedisLock(client, key, lease=5)
    assert await third.acquire() is False
    assert await second.release() is True
    assert await third.acquire() is True
    await third.release()


async def test_watchdog_keeps_a_lock_whose_holder_outlives_the_lease(env: tuple[Any, str]) -> None:
    """The watchdog extends a held lock through four leases: no rival gets it until released."""
    client, key = env
    holder = RedisLock(client, key, lease=0.3)
    assert await holder.acquire()
    stolen = 0
    started = time.monotonic()
    while time.monotonic() - started < 1.2:  # four leases long
        rival = RedisLock(client, key, lease=0.3)
        if await rival.acquire():
            stolen += 1
            await rival.release()
        assert holder.held
        await asyncio.sleep(0.03)
    assert stolen == 0
    assert await holder.release() is True
    rival = RedisLock(client, key, lease=0.3)
    assert await rival.acquire()
    await rival.release()


async def test_watchdog_notices_a_lost_lease(env: tuple[Any, str]) -> None:
    """Once the key is overwritten the lock is not held, and release leaves the new value alone."""
    client, key = env
    holder = RedisLock(client, key, lease=0.15)
    assert await holder.acquire()
    await client.set(key, b"someone else")  # e.g. expired during a partition and retaken
    for _ in range(100):
        if not holder.held:
            break
        await asyncio.sleep(0.02)
    assert not holder.held
    assert await holder.release() is False
    assert await client.get(key) == b"someone else"


async def test_acquire_with_wait_timeout_returns_false(env: tuple[Any, str]) -> None:
    """acquire gives False after waiting 0 or 0.2 s on a held lock, and True once it is freed."""
    client, key = env
    holder = RedisLock(client, key, lease=5)
    assert await holder.acquire()
    waiter = RedisLock(client, key, lease=5)
    assert await waiter.acquire(wait=0) is False
    started = time.monotonic()
    assert await waiter.acquire(wait=0.2) is False
    assert time.monotonic() - started >= 0.2  # it did wait, then gave up
    assert not waiter.held

    async def release_soon() -> None:
        await asyncio.sleep(0.1)
        await holder.release()

    releaser = asyncio.create_task(release_soon())
    assert await waiter.acquire(wait=5) is True
    await releaser
    await waiter.release()


async def test_async_with_holds_then_frees_and_misuse_is_refused(env: tuple[Any, str]) -> None:
    """async with holds the lock and deletes the key on exit; re-acquiring while held and lease=0
    raise, and a second release is False."""
    client, key = env
    lock = RedisLock(client, key, lease=5)
    async with lock:
        assert lock.held
        assert await client.get(key) is not None
        with pytest.raises(RuntimeError, match="already held"):
            await lock.acquire()
    assert not lock.held
    assert await client.exists(key) == 0
    assert await lock.release() is False  # releasing twice is harmless
    with pytest.raises(ValueError, match="lease"):
        RedisLock(client, key, lease=0)


class _CancelAfterSet:
    """A client whose SET reaches Redis, then the caller is cancelled before seeing the reply."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def set(self, *args: Any, **kwargs: Any) -> Any:
        await self._client.set(*args, **kwargs)
        raise asyncio.CancelledError


async def test_cancelled_acquire_does_not_orphan_the_lock(env: tuple[Any, str]) -> None:
    """An acquire cancelled after its SET landed frees the key at once, not after the lease."""
    client, key = env
    lock = RedisLock(client, key, lease=30)
    lock.client = _CancelAfterSet(client)
    with pytest.raises(asyncio.CancelledError):
        await lock.acquire()
    assert not lock.held
    for _ in range(200):  # released in the background, not after the 30 s lease
        if not await client.exists(key):
            break
        await asyncio.sleep(0.01)
    assert await client.exists(key) == 0
    again = RedisLock(client, key, lease=5)
    assert await again.acquire()
    await again.release()


async def test_cancelled_release_still_frees_the_lock(env: tuple[Any, str]) -> None:
    """A release cancelled before Redis replied still deletes the key in the background."""
    client, key = env
    lock = RedisLock(client, key, lease=30)
    assert await lock.acquire()
    real = lock._release_script
    calls = 0

    async def cancelled_first(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncio.CancelledError  # the caller's timeout fired before the reply
        return await real(**kwargs)

    lock._release_script = cancelled_first  # type: ignore[assignment]
    with pytest.raises(asyncio.CancelledError):
        await lock.release()
    assert not lock.held
    for _ in range(200):
        if not await client.exists(key):
            break
        await asyncio.sleep(0.01)
    assert await client.exists(key) == 0
    assert calls == 2
