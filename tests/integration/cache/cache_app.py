"""A cache process for the multi-process tests: ``python cache_app.py MODE URL NAMESPACE …``.

``stampede LOCK GO_AT COUNTER LEASE``: at wall time GO_AT, 1,000 concurrent get_or_load
of one missing key; the loader counts its runs in Redis (INCR COUNTER) and takes 1 s.
``reader``: reads one key in a loop and prints each new value with the time it saw it.
"""

from __future__ import annotations

import asyncio
import sys
import time

import redis.asyncio as redis

from corestone.cache import TieredCache
from corestone.resilience import BreakerRegistry


async def stampede(
    url: str, namespace: str, lock: bool, go_at: float, counter: str, lease: float
) -> None:
    counts = redis.Redis.from_url(url)

    async def load() -> str:
        await counts.incr(counter)
        await asyncio.sleep(1.0)
        return "loaded"

    async with TieredCache.from_url(url, namespace=namespace, breakers=BreakerRegistry()) as cache:
        await asyncio.sleep(max(0.0, go_at - time.time()))
        results = await asyncio.gather(
            *(cache.get_or_load("hot", load, distributed_lock=lock, lock_lease=lease)
              for _ in range(1000))
        )  # fmt: skip
        print("done", sorted(set(results)), flush=True)
    await counts.aclose()


async def reader(url: str, namespace: str) -> None:
    async with TieredCache.from_url(url, namespace=namespace, breakers=BreakerRegistry()) as cache:
        while not cache.backplane.connected:  # noqa: ASYNC110 - a property, no event to await
            await asyncio.sleep(0.01)
        print("ready", flush=True)
        seen = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            value = await cache.get("k")
            if value != seen:
                seen = value
                print("saw", value, repr(time.time()), flush=True)
                if value == "stop":
                    return
            await asyncio.sleep(0.0002)


if __name__ == "__main__":
    mode, url, namespace, *rest = sys.argv[1:]
    if mode == "stampede":
        asyncio.run(
            stampede(url, namespace, rest[0] == "1", float(rest[1]), rest[2], float(rest[3]))
        )
    else:
        asyncio.run(reader(url, namespace))
