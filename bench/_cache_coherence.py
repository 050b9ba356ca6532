"""Coherence and outage figures of the cache suite (corestone only: the peers have neither).

* Cross-instance invalidation: two TieredCache instances (one process, one event loop)
  share Redis and the backplane; B holds a key in L1, A writes a new value, and the delay
  is the time from A publishing the announcement until B's L1 copy is gone. Beside it,
  the whole user-visible window: from A's ``set`` call until B's ``get`` returns the new
  value (adds A's write to Redis and B's re-read from it).
* Redis outage, on a redis-server of the run's own: entries are loaded, Redis is killed,
  the entries' freshness runs out, and every ``get_or_load`` with a failing loader must
  serve the stale value without an exception (fail-safe). Then Redis is restarted, and
  the time until a value written through the cache is read back from L2 (its L1 copy
  dropped) is "back to L2".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Hashable
from typing import Any

from bench._cache_corestone import tiered
from bench._cache_peers import VALUE
from bench._cache_timing import OwnRedis, own_redis, percentile


async def invalidation_delays_ms(
    url: str, protocol: int, samples: int
) -> tuple[list[float], list[float]]:
    """(invalidation delays, write-to-fresh-read delays), milliseconds, on ``protocol``.

    Invalidation: from A starting to publish its announcement until B's L1 copy is gone
    (B's L1 reports the removal through ``on_evict``; nothing spins, so the figure is
    not inflated by the benchmark fighting the reader for the CPU). Write-to-fresh-read:
    from A's ``set`` call until B's ``get`` returns the new value (adds A's write to
    Redis and B's re-read from it).
    """
    from corestone.cache import MemoryCache, TieredCache

    namespace = f"benchinv{protocol}x{int(time.time() * 1000) % 1_000_000}"
    key = "task:inv"
    dropped = asyncio.Event()
    dropped_at = published_at = 0.0
    target = ""

    def on_evict(evicted: Hashable, value: object, reason: str) -> None:
        nonlocal dropped_at
        if evicted == target and reason != "replaced":
            dropped_at = time.perf_counter()
            dropped.set()

    invalidated: list[float] = []
    fresh: list[float] = []
    b_memory = MemoryCache(max_entries=10_000, on_evict=on_evict)
    async with (
        TieredCache.from_url(url, namespace=namespace, protocol=protocol) as a,
        TieredCache.from_url(url, namespace=namespace, protocol=protocol, memory=b_memory) as b,
    ):
        target = b.key(key)
        publish = a.backplane.publish

        async def timed_publish(message: Any) -> bool:
            nonlocal published_at
            published_at = time.perf_counter()
            return await publish(message)

        a.backplane.publish = timed_publish  # type: ignore[method-assign]
        await asyncio.sleep(0.1)  # both subscribed
        await a.set(key, 0, ttl=600)
        for n in range(1, samples + 1):
            for _ in range(100):  # B holds the current value in L1
                if await b.get(key) == n - 1 and target in b.memory:
                    break
                await asyncio.sleep(0.001)
            dropped.clear()
            start = time.perf_counter()
            await a.set(key, n, ttl=600)
            try:
                await asyncio.wait_for(dropped.wait(), 2.0)
            except TimeoutError:
                invalidated.append(float("inf"))  # never dropped: counts against p99
                fresh.append(float("inf"))
                continue
            invalidated.append((dropped_at - published_at) * 1000)
            seen = await b.get(key) == n
            fresh.append((time.perf_counter() - start) * 1000 if seen else float("inf"))
        await a.delete(key)
    return invalidated, fresh


async def outage(keys: int) -> dict[str, float]:
    """Stale serving with Redis down, then the time back to L2 once it returns.

    Default options except a short ``ttl`` (so entries go stale quickly). Round 1 over the
    keys takes the full fail-safe path per key (L2 unavailable, loader fails, stale value
    served and throttled); rounds 2 and 3 meet the throttled stale values. The check is
    the p99 over all calls; round 1 alone is reported beside it.
    """
    if not OwnRedis.available():
        raise RuntimeError("redis-server is not installed")
    from corestone.cache import CacheOptions

    options = CacheOptions(ttl=0.3)
    with own_redis() as server:
        async with contextlib.AsyncExitStack() as stack:
            cache = await tiered(server.url, stack, options=options)
            names = [f"task:{n}" for n in range(keys)]

            async def good() -> dict[str, Any]:
                return VALUE

            async def broken() -> dict[str, Any]:
                raise ConnectionError("database down too")

            for name in names:
                await cache.get_or_load(name, good)
            before = sum(1 for name in names if cache.key(name) in cache.memory)
            server.kill()
            await asyncio.sleep(options.ttl + 0.05)  # every entry is stale now
            kept = sum(1 for name in names if cache.key(name) in cache.memory)
            rounds: list[list[float]] = [[], [], []]
            errors = wrong = 0
            for took in rounds:
                for name in names:
                    start = time.perf_counter()
                    try:
                        value = await cache.get_or_load(name, broken)
                    except Exception:  # noqa: BLE001 - counted: must be zero
                        errors += 1
                        continue
                    finally:
                        took.append((time.perf_counter() - start) * 1000)
                    wrong += value != VALUE
            back = await _back_to_l2(cache, server)
    every = [ms for took in rounds for ms in took]
    return {
        "outage_stale_p50_ms": percentile(every, 0.5),
        "outage_stale_p99_ms": percentile(every, 0.99),
        "outage_stale_first_p99_ms": percentile(rounds[0], 0.99),
        "outage_stale_max_ms": max(every),
        "outage_exceptions": float(errors),
        "outage_wrong_values": float(wrong),
        "outage_l1_kept_pct": 100.0 * kept / max(before, 1),
        "outage_back_to_l2_s": back,
    }


async def _back_to_l2(cache: Any, server: OwnRedis, within: float = 10.0) -> float:
    """Seconds from Redis listening again until a write through the cache reads back from L2."""
    await asyncio.to_thread(server.start)
    start = time.perf_counter()
    probe, full = "probe", cache.key("probe")
    n = 0
    while time.perf_counter() - start < within:
        n += 1
        with contextlib.suppress(Exception):
            await cache.set(probe, n, ttl=60)
            cache.memory.delete(full)  # the read below must come from Redis
            if await cache.get(probe) == n:
                return time.perf_counter() - start
        await asyncio.sleep(0.005)
    return float("inf")
