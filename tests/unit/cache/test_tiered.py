"""TieredCache without Redis: the same API and guarantees inside one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from corestone.cache import CacheOptions, MemoryCache, TieredCache, cached
from corestone.context import bind
from corestone.errors import InvalidInputError, LoadTimeoutError
from corestone.observability.metrics import Metrics
from corestone.testing import ManualClock


class Clock(ManualClock):
    """One clock the test moves by hand, given to the cache as both of its clocks."""

    def __init__(self) -> None:
        super().__init__(1_000_000.0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def cache(clock: Clock) -> AsyncIterator[TieredCache]:
    async with TieredCache(
        namespace="t",
        memory=MemoryCache(max_entries=1000, clock=clock),
        clock=clock,
        wall_clock=clock,
        options=CacheOptions(ttl=10, max_stale=100),
    ) as built:
        yield built


class Loader:
    """Returns ``values`` in turn; ``gated`` loads wait until the test opens ``gate``."""

    def __init__(self, *values: Any, gated: bool = False) -> None:
        self.values = list(values)
        self.calls = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()

    async def __call__(self) -> Any:
        self.calls += 1
        self.started.set()
        await self.gate.wait()
        value = self.values[min(self.calls, len(self.values)) - 1]
        if isinstance(value, Exception):
            raise value
        return value


async def _loads_finished(cache: TieredCache) -> None:
    """Wait for every load in flight, background refreshes included (white-box)."""
    await asyncio.gather(*cache._core.flights.tasks, return_exceptions=True)


async def test_a_set_value_is_read_back_until_deleted(cache: TieredCache) -> None:
    """A value set is read back equal, and after delete get returns the caller's default."""
    await cache.set("a", {"x": 1})
    assert await cache.get("a") == {"x": 1}
    await cache.delete("a")
    assert await cache.get("a", "gone") == "gone"


async def test_expired_values_are_not_served_by_get(cache: TieredCache, clock: Clock) -> None:
    """get returns nothing for a value just past its ttl (no stale read outside get_or_load)."""
    await cache.set("a", 1, ttl=5)
    clock.now += 5.01
    assert await cache.get("a") is None


async def test_the_same_key_in_two_workspaces_never_collides(cache: TieredCache) -> None:
    """One key in workspaces 1 and 2 holds two values, given or bound, and none globally."""
    await cache.set("k", "one", workspace=1)
    await cache.set("k", "two", workspace=2)
    with bind(workspace=1):
        assert await cache.get("k") == "one"
    assert await cache.get("k", workspace=2) == "two"
    assert await cache.get("k") is None  # global scope


async def test_invalidating_one_workspace_leaves_the_others(cache: TieredCache) -> None:
    """A tag invalidation and a clear in workspace 1 leave workspace 2's entries untouched."""
    for ws in (1, 2):
        await cache.set("k", ws, tags=["workspace-data"], workspace=ws)
        await cache.set("j", ws, workspace=ws)
    await cache.invalidate_tags(["workspace-data"], workspace=1)
    await cache.clear(workspace=1)
    assert await cache.get_many(["k", "j"], workspace=1) == {}
    assert await cache.get_many(["k", "j"], workspace=2) == {"k": 2, "j": 2}


async def test_tags_drop_exactly_the_tagged_entries(cache: TieredCache) -> None:
    """Invalidating a tag drops the entries carrying it and keeps those with other tags or none."""
    await cache.set("a", 1, tags=["t1", "t2"])
    await cache.set("b", 2, tags=["t2"])
    await cache.set("c", 3)
    await cache.invalidate_tags(["t1"])
    assert await cache.get_many(["a", "b", "c"]) == {"b": 2, "c": 3}


async def test_a_pattern_with_glob_characters_matches_them_literally(cache: TieredCache) -> None:
    """invalidate_pattern("user:[1]:*") drops user:[1]:a only, not user:1:a nor user:?:b."""
    await cache.set("user:[1]:a", 1)
    await cache.set("user:1:a", 2)
    await cache.set("user:?:b", 3)
    await cache.invalidate_pattern("user:[1]:*")
    assert await cache.get_many(["user:[1]:a", "user:1:a", "user:?:b"]) == {
        "user:1:a": 2,
        "user:?:b": 3,
    }


async def test_a_thousand_concurrent_misses_call_the_loader_once(cache: TieredCache) -> None:
    """1,000 concurrent get_or_load misses of one key share a single loader call and its value."""
    loader = Loader("v", gated=True)
    callers = asyncio.gather(*(cache.get_or_load("k", loader) for _ in range(1000)))
    await loader.started.wait()
    loader.gate.set()
    results = await callers
    assert loader.calls == 1
    assert set(results) == {"v"}
    assert cache.stats.loads == 1


async def test_a_caller_that_gives_up_does_not_cancel_the_load_for_others(
    cache: TieredCache,
) -> None:
    """Cancelling one waiting caller leaves the shared load running, so the other gets its value."""
    loader = Loader("v", gated=True)
    first = asyncio.create_task(cache.get_or_load("k", loader))
    second = asyncio.create_task(cache.get_or_load("k", loader))
    await loader.started.wait()
    first.cancel()
    await asyncio.sleep(0)  # the cancellation lands before the load finishes
    loader.gate.set()
    assert await second == "v"
    assert loader.calls == 1


async def test_fail_safe_serves_the_stale_value_when_the_loader_fails(
    cache: TieredCache, clock: Clock
) -> None:
    """When the loader fails on an expired key the stale value is served; retries are throttled."""
    assert await cache.get_or_load("k", Loader("old")) == "old"
    clock.now += 11  # expired, within max_stale
    failing = Loader(RuntimeError("db down"))
    assert await cache.get_or_load("k", failing) == "old"
    assert cache.stats.stale_served == 1
    # Throttled: for fail_safe_throttle seconds the stale value counts as fresh.
    assert await cache.get_or_load("k", failing) == "old"
    assert failing.calls == 1


async def test_without_a_stale_value_the_loader_error_reaches_the_caller(
    cache: TieredCache,
) -> None:
    """With no value to fall back on, the loader's own exception reaches the caller unchanged."""
    with pytest.raises(RuntimeError, match="db down"):
        await cache.get_or_load("k", Loader(RuntimeError("db down")))


async def test_past_max_stale_nothing_stale_is_served(cache: TieredCache, clock: Clock) -> None:
    """Past ttl + max_stale nothing stale is served when the loader fails: its error is raised."""
    await cache.get_or_load("k", Loader("old"), max_stale=5)
    clock.now += 10 + 5 + 1
    with pytest.raises(RuntimeError, match="db down"):
        await cache.get_or_load("k", Loader(RuntimeError("db down")), max_stale=5)
    assert cache.stats.stale_served == 0


async def test_soft_timeout_returns_stale_at_once_and_refreshes_in_background(
    cache: TieredCache, clock: Clock
) -> None:
    """Past soft_timeout a slow load returns the stale value, then stores the new one."""
    await cache.get_or_load("k", Loader("old"))
    clock.now += 11
    slow = Loader("new", gated=True)
    assert await cache.get_or_load("k", slow, soft_timeout=0.01) == "old"
    slow.gate.set()
    await _loads_finished(cache)
    assert await cache.get("k") == "new"
    assert slow.calls == 1


async def test_hard_timeout_without_a_stale_value_raises(cache: TieredCache) -> None:
    """Past hard_timeout with nothing stale LoadTimeoutError is raised; the load still stores."""
    slow = Loader("late", gated=True)
    with pytest.raises(LoadTimeoutError):
        await cache.get_or_load("k", slow, hard_timeout=0.02)
    slow.gate.set()
    await _loads_finished(cache)
    assert await cache.get("k") == "late"  # the load finished and was stored


async def test_eager_refresh_reloads_a_hot_key_before_it_expires(
    cache: TieredCache, clock: Clock
) -> None:
    """A read past eager_refresh of the ttl returns the value and reloads it in the background."""
    loader = Loader("v1", "v2")
    assert await cache.get_or_load("k", loader, eager_refresh=0.5) == "v1"
    clock.now += 6  # past 50 % of ttl 10, still fresh
    assert await cache.get_or_load("k", loader, eager_refresh=0.5) == "v1"
    await _loads_finished(cache)
    assert loader.calls == 2
    assert await cache.get("k") == "v2"
    assert cache.stats.eager_refreshes == 1


async def test_a_load_overtaken_by_an_invalidation_is_not_cached(cache: TieredCache) -> None:
    """A value loaded before an invalidation of its tag is returned to its caller but not cached."""
    loader = Loader("read before the write", gated=True)
    task = asyncio.create_task(cache.get_or_load("k", loader, tags=["entity:Task:1"]))
    await loader.started.wait()
    await cache.invalidate_tags(["entity:Task:1"])
    loader.gate.set()
    assert await task == "read before the write"
    assert await cache.get("k") is None


async def test_warm_loads_only_the_missing_keys(cache: TieredCache) -> None:
    """warm loads only keys not cached yet, keeps cached ones, and counts every key asked for."""
    calls: list[str | bytes] = []

    async def load(key: str | bytes) -> str:
        calls.append(key)
        return f"v-{key!s}"

    await cache.set("b", "kept")
    assert await cache.warm(["a", "b", "c"], load) == 3
    assert sorted(map(str, calls)) == ["a", "c"]
    assert await cache.get_many(["a", "b", "c"]) == {"a": "v-a", "b": "kept", "c": "v-c"}


async def test_warmers_run_at_start_and_a_failing_one_is_not_fatal() -> None:
    """Warmers run at start; one that raises stops neither the start nor the other warmers."""
    cache = TieredCache(namespace="w")

    async def broken(_: TieredCache) -> None:
        raise RuntimeError("no data yet")

    async def fill(target: TieredCache) -> None:
        await target.set("ready", True)

    cache.add_warmer(broken)
    cache.add_warmer(fill)
    async with cache:
        assert await cache.get("ready") is True


async def test_cached_decorator_key_template_tags_and_invalidate(cache: TieredCache) -> None:
    """@cached keys by its template and reloads after a tag invalidation or .invalidate()."""
    calls: list[int] = []

    @cached(cache, key="user:{user_id}", tags=["user:{user_id}"], ttl=30)
    async def profile(user_id: int, verbose: bool = False) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id}

    assert await profile(1) == {"id": 1}
    assert await profile(1) == {"id": 1}
    assert await profile(user_id=1, verbose=True) == {"id": 1}
    assert calls == [1]
    await cache.invalidate_tags(["user:1"])
    await profile(1)
    await profile.invalidate(1)  # type: ignore[attr-defined]
    await profile(1)
    assert calls == [1, 1, 1]


async def test_cached_default_key_distinguishes_arguments(cache: TieredCache) -> None:
    """Without a key template @cached keys by argument: different arguments never share."""

    @cached(lambda: cache)
    async def double(x: int) -> int:
        return 2 * x

    assert [await double(1), await double(2), await double(1)] == [2, 4, 2]
    assert cache.stats.loads == 2


def test_cached_refuses_sync_functions(cache: TieredCache) -> None:
    """@cached on a plain (non-async) function raises TypeError at decoration."""
    with pytest.raises(TypeError):
        cached(cache)(lambda: 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"ttl": 0},
        {"ttl": float("nan")},
        {"jitter": 1.5},
        {"eager_refresh": 1.0},
        {"max_stale": -1},
        {"hard_timeout": 0},
    ],
)
def test_bad_options_name_the_field(options: dict[str, Any]) -> None:
    """Each invalid CacheOptions value raises InvalidInputError naming exactly that field."""
    with pytest.raises(InvalidInputError) as caught:
        CacheOptions(**options)
    assert caught.value.field == next(iter(options))


async def test_jitter_only_shortens_freshness(clock: Clock) -> None:
    """With 20% jitter, freshness falls between 80% and 100% of the ttl, spread, never beyond it."""
    async with TieredCache(
        clock=clock, wall_clock=clock, options=CacheOptions(ttl=100, jitter=0.2)
    ) as cache:
        for i in range(50):
            await cache.set(f"k{i}", i)
        deadlines = [
            cache.memory.get(cache.key(f"k{i}")).fresh_until - clock.now for i in range(50)
        ]
    assert all(80 <= d <= 100 for d in deadlines)
    assert len(set(deadlines)) > 1


async def test_health_is_pass_without_redis_and_metrics_are_exported() -> None:
    """Without Redis the health check passes, hit and entry metrics are exported, and L2 is None."""
    metrics = Metrics()
    async with TieredCache.from_url(None, namespace="m", metrics=metrics) as cache:
        await cache.set("a", 1)
        await cache.get("a")
        await cache.get("missing")
        check = await cache.check()
        text = metrics.render().decode()
    assert check.status.value == "pass"
    assert 'corestone_cache_requests_total{cache="cache",result="hit",tier="l1"} 1.0' in text
    assert 'corestone_cache_l1_entries{cache="cache"} 1.0' in text
    assert cache.snapshot()["l2"] is None
