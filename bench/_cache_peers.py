"""The peers of the cache suite: a dict, cachetools, cashews, aiocache and raw redis-py.

Each builder returns timing cases in the shapes :mod:`bench._cache_timing` takes and
registers its cleanup on the given exit stack. Every peer stores the same small value
(a task-like dict) under the same kind of key, so the comparisons are like for like.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import cachetools

from bench._cache_timing import AsyncOp

VALUE: dict[str, Any] = {"id": 1, "title": "write the cache benchmark", "done": False, "n": 42}
HOT = "task:1"


def micro_cases() -> dict[str, tuple[str, Any, Any]]:
    """In-process hits: name -> ('sync'|'async', fn, key)."""
    plain = {HOT: VALUE}
    ttl_cache: cachetools.TTLCache[str, Any] = cachetools.TTLCache(maxsize=10_000, ttl=300)
    ttl_cache[HOT] = VALUE

    async def async_dict_get(key: str) -> Any:
        return plain.get(key)

    return {
        "dict_get": ("sync", plain.get, HOT),
        "cachetools_ttlcache_getitem": ("sync", ttl_cache.__getitem__, HOT),
        "async_dict_get": ("async", async_dict_get, HOT),
    }


async def cashews_memory(stack: contextlib.AsyncExitStack) -> dict[str, tuple[str, Any, Any]]:
    """cashews' memory backend: a plain ``get`` and a ``@cache(ttl=…)`` decorated hit."""
    from cashews import Cache

    memory = Cache()
    memory.setup("mem://")
    stack.push_async_callback(memory.close)
    await memory.set(HOT, VALUE, expire=300)

    @memory(ttl="5m")
    async def load_task(task_id: int) -> dict[str, Any]:
        return dict(VALUE, id=task_id)

    await load_task(1)
    return {
        "cashews_memory_get": ("async", memory.get, HOT),
        "cashews_decorated_hit": ("async", load_task, 1),
    }


async def aiocache_memory(stack: contextlib.AsyncExitStack) -> dict[str, tuple[str, Any, Any]]:
    from aiocache import SimpleMemoryCache  # type: ignore[import-untyped]

    memory = SimpleMemoryCache()
    stack.push_async_callback(memory.close)
    await memory.set(HOT, VALUE, ttl=300)
    return {"aiocache_memory_get": ("async", memory.get, HOT)}


async def redis_cases(
    url: str, prefix: str, stack: contextlib.AsyncExitStack
) -> dict[str, AsyncOp]:
    """One GET (or SET) each through raw redis-py, cashews and aiocache."""
    import redis.asyncio as redis
    from aiocache import RedisCache
    from cashews import Cache

    raw = redis.Redis.from_url(url)
    stack.push_async_callback(raw.aclose)
    key = f"{prefix}:peer:{HOT}"
    await raw.set(key, b"x" * 64, ex=600)

    remote = Cache()
    remote.setup(url, client_side=False)
    stack.push_async_callback(remote.close)
    await remote.set(key + ":cashews", VALUE, expire=600)

    parsed = urlparse(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aio = RedisCache(
            endpoint=parsed.hostname or "127.0.0.1",
            port=parsed.port or 6379,
            db=int((parsed.path or "/0").lstrip("/") or 0),
            namespace=prefix,
        )
    stack.push_async_callback(aio.close)
    await aio.set("peer:aiocache", VALUE, ttl=600)
    stack.push_async_callback(_delete_prefix, raw, prefix)

    return {
        "redis_get_raw": lambda: raw.get(key),
        "redis_set_raw": lambda: raw.set(key, b"x" * 64, ex=600),
        "cashews_redis_get": lambda: remote.get(key + ":cashews"),
        "aiocache_redis_get": lambda: aio.get("peer:aiocache"),
    }


async def _delete_prefix(client: Any, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    for start in range(0, len(keys), 500):
        await client.unlink(*keys[start : start + 500])


def raw_mget(url: str, keys: list[str], stack: contextlib.AsyncExitStack) -> AsyncOp:
    """One MGET of ``keys`` through a plain redis-py client (the get_many baseline)."""
    import redis.asyncio as redis

    raw = redis.Redis.from_url(url)
    stack.push_async_callback(raw.aclose)
    return lambda: raw.mget(keys)


async def stampede_calls(
    decorate: Callable[[Callable[[int], Awaitable[Any]]], Callable[[int], Awaitable[Any]]],
    concurrency: int,
) -> float:
    """Loader calls when ``concurrency`` callers ask a decorated function for one missing key."""
    calls = 0

    async def load(task_id: int) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return dict(VALUE, id=task_id)

    wrapped = decorate(load)
    await asyncio.gather(*(wrapped(7) for _ in range(concurrency)), return_exceptions=True)
    return float(calls)


async def peer_stampedes(concurrency: int, stack: contextlib.AsyncExitStack) -> dict[str, float]:
    """Loader calls under a stampede for the peers' decorators (memory backends, defaults)."""
    from aiocache import cached as aiocache_cached
    from cashews import Cache

    memory = Cache()
    memory.setup("mem://")
    stack.push_async_callback(memory.close)
    return {
        "cashews_decorated": await stampede_calls(memory(ttl="5m"), concurrency),
        "aiocache_cached": await stampede_calls(aiocache_cached(ttl=300), concurrency),
    }
