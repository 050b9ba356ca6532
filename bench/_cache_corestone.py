"""corestone's rows of the cache suite: L1 hits, tiered hits and round trips, stampedes.

Everything is built through the public API (``corestone.cache``); the caller checks that
the names exist first and leaves the rows out (with a note) when they do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from typing import Any

from bench._cache_peers import HOT, VALUE, stampede_calls
from bench._cache_timing import AsyncOp

_caches = itertools.count()


def available() -> tuple[bool, bool]:
    """(MemoryCache importable, TieredCache and @cached importable)."""
    try:
        from corestone.cache.memory import MemoryCache  # noqa: F401
    except ImportError:
        return False, False
    try:
        from corestone.cache import TieredCache, cached  # noqa: F401
    except ImportError:
        return True, False
    return True, True


def memory_cases() -> dict[str, tuple[str, Any, Any]]:
    """L1 on its own: the ``get`` of a hit, from sync code and from async code.

    ``MemoryCache`` has one read path, ``get``, which never awaits: async code calls it
    as it is, inside its coroutine (the timing loop runs in one), so that is what the
    async row measures (it keeps its name, ``corestone_memory_aget``). Wrapping it in a
    coroutine to ``await`` it costs one coroutine and one call more (~80 ns here).
    """
    from corestone.cache.memory import MemoryCache

    memory = MemoryCache(max_entries=10_000)
    memory.set(HOT, VALUE, ttl=300)
    return {
        "corestone_memory_get": ("sync", memory.get, HOT),
        "corestone_memory_aget": ("sync", memory.get, HOT),
    }


async def tiered(
    url: str | None,
    stack: contextlib.AsyncExitStack,
    *,
    namespace: str | None = None,
    **options: Any,
) -> Any:
    """A started TieredCache (by default in a namespace of its own), closed by ``stack``."""
    from corestone.cache import TieredCache

    namespace = namespace or f"bench{os.getpid()}n{next(_caches)}"
    cache = TieredCache.from_url(url, namespace=namespace, **options)
    await stack.enter_async_context(cache)
    return cache


async def tiered_micro_cases(cache: Any) -> dict[str, tuple[str, Any, Any]]:
    """A tiered ``get`` that hits L1, and a ``@cached`` function's hit."""
    from corestone.cache import cached

    await cache.set(HOT, VALUE, ttl=300)

    @cached(cache, ttl=300)
    async def load_task(task_id: int) -> dict[str, Any]:
        return dict(VALUE, id=task_id)

    await load_task(1)
    await load_task(1)
    return {
        "corestone_tiered_get_hit": ("async", cache.get, HOT),
        "corestone_cached_hit": ("async", load_task, 1),
    }


async def tiered_redis_cases(
    cache: Any, batch: int
) -> tuple[dict[str, AsyncOp], dict[str, Any], list[str]]:
    """``get_many(batch)`` served by Redis (L1 cleared before each call) and ``set``.

    Returns the cases, their untimed preparations, and the full Redis keys of the batch
    (so the raw MGET baseline reads exactly the same keys and bytes).
    """
    keys = [f"task:{n}" for n in range(batch)]
    for key in keys:
        await cache.set(key, dict(VALUE, id=key), ttl=600)
    counter = 0

    async def set_one() -> None:
        nonlocal counter
        counter += 1
        await cache.set(f"set:{counter % 1000}", VALUE, ttl=600)

    async def get_many() -> None:
        found = await cache.get_many(keys)
        if len(found) != batch:
            raise RuntimeError(f"get_many returned {len(found)} of {batch}: not served by L2")

    fulls = [cache.key(key) for key in keys]
    store = cache.remote.store  # L2 alone (decoding, no L1): shows where get_many's time goes
    cases: dict[str, AsyncOp] = {
        f"corestone_get_many{batch}_l2": get_many,
        f"corestone_redis_store_get_many{batch}": lambda: store.get_many(fulls),
        "corestone_tiered_set": set_one,
    }
    prepare = {f"corestone_get_many{batch}_l2": cache.memory.clear}
    return cases, prepare, fulls


async def stampedes(cache: Any, concurrency: int) -> dict[str, float]:
    """Loader calls when ``concurrency`` callers want one missing key at once."""
    from corestone.cache import cached

    out: dict[str, float] = {}
    for name, extra in (("get_or_load", {}), ("get_or_load_locked", {"distributed_lock": True})):
        out[name] = await _stampede([cache], concurrency, extra)
    out["cached"] = await stampede_calls(cached(cache, ttl=300), concurrency)
    return out


async def two_instance_stampedes(
    url: str, concurrency: int, stack: contextlib.AsyncExitStack
) -> dict[str, float]:
    """The same, split over two instances sharing Redis (as two processes would).

    Without the distributed lock each instance loads once; with it, once in total, also
    when the loader (0.3 s) outlives the lock's lease (0.1 s: the watchdog extends it).
    """
    namespace = f"benchstampede{os.getpid()}"
    pair = [await tiered(url, stack, namespace=namespace) for _ in range(2)]
    return {
        "two_instances_get_or_load": await _stampede(pair, concurrency, {}),
        "two_instances_get_or_load_locked_short_lease": await _stampede(
            pair, concurrency, {"distributed_lock": True, "lock_lease": 0.1}, load_seconds=0.3
        ),
    }


async def _stampede(
    caches: list[Any], concurrency: int, extra: dict[str, Any], load_seconds: float = 0.02
) -> float:
    calls = 0

    async def load() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(load_seconds)
        return VALUE

    key = f"stampede:{next(_caches)}"
    await asyncio.gather(
        *(
            caches[n % len(caches)].get_or_load(key, load, ttl=300, **extra)
            for n in range(concurrency)
        ),
        return_exceptions=True,
    )
    return float(calls)
