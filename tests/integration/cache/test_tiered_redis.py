"""TieredCache on a real Redis: coherence, tenancy, hostile keys, and Redis going away."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from corestone.cache import CacheOptions, MemoryCache, TieredCache
from corestone.observability.health import HealthStatus
from corestone.resilience import BreakerRegistry
from corestone.testing import RedisServer

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def _cache(
    url: str, namespace: str, *, protocol: int | None = None, ttl: float = 300
) -> AsyncIterator[TieredCache]:
    async with TieredCache.from_url(
        url,
        namespace=namespace,
        protocol=protocol,
        breakers=BreakerRegistry(),
        options=CacheOptions(ttl=ttl),
        memory=MemoryCache(max_entries=10_000),
    ) as cache:
        await _until(lambda: cache.backplane.connected)
        yield cache


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@pytest.fixture
async def namespace(redis_url: str) -> AsyncIterator[str]:
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url)
    keys = [key async for key in client.scan_iter(match=f"corestone:{name}:*")]
    keys += [key async for key in client.scan_iter(match=f"corestone:{name}#*")]
    if keys:
        await client.unlink(*keys)
    await client.aclose()


@pytest.mark.parametrize("protocol", [2, 3])
async def test_a_write_on_one_instance_is_seen_fresh_by_the_other(
    redis_url: str, namespace: str, protocol: int
) -> None:
    """Each of 50 writes on a is read back by b right after it drops its L1 copy, and b's tag
    invalidation clears a's L1, on RESP2 and RESP3."""
    async with (
        _cache(redis_url, namespace, protocol=protocol) as a,
        _cache(redis_url, namespace, protocol=protocol) as b,
    ):
        delays = []
        for version in range(50):
            await a.set("task:1", {"version": version}, tags=["entity:Task:1"])
            started = time.perf_counter()
            await _until(
                lambda v=version: (
                    b.memory.get(b.key("task:1")) is None
                    or (b.memory.get(b.key("task:1")).value == {"version": v})
                )
            )
            delays.append(time.perf_counter() - started)
            assert await b.get("task:1") == {"version": version}  # b now has it in L1
        await b.invalidate_tags(["entity:Task:1"])
        await _until(lambda: a.memory.get(a.key("task:1")) is None)
        assert await a.get("task:1") is None
        delays.sort()
        print(
            f"RESP{protocol} invalidation delay p50 {delays[25] * 1e3:.2f} ms, "
            f"p99 {delays[-1] * 1e3:.2f} ms"
        )


async def test_get_many_reads_l2_and_fills_l1(redis_url: str, namespace: str) -> None:
    """get_many on b finds a's 100 values in L2, keeps them in L1 for the next read, and drops
    them on a tag invalidation."""
    async with _cache(redis_url, namespace) as a, _cache(redis_url, namespace) as b:
        await a.set_many({f"k{i}": i for i in range(100)}, tags=["batch"])
        # b hears of the write first: a read overtaken by it would not be kept in L1.
        await _until(lambda: b.stats.invalidations_received >= 1)
        found = await b.get_many([f"k{i}" for i in range(105)])
        assert found == {f"k{i}": i for i in range(100)}
        assert b.stats.l2_hits == 100
        assert await b.get_many([f"k{i}" for i in range(3)]) == {"k0": 0, "k1": 1, "k2": 2}
        assert b.stats.l1_hits == 3
        await a.invalidate_tags(["batch"])
        await _until(lambda: len(b.memory) == 0)
        assert await b.get_many(["k1"]) == {}


async def test_a_tag_invalidation_right_after_get_many_drops_the_whole_batch(
    redis_url: str, namespace: str
) -> None:
    """Entries get_many keeps in L1 are reached by a tag invalidation before the loop turns."""
    async with _cache(redis_url, namespace) as a, _cache(redis_url, namespace) as b:
        await a.set_many({f"k{i}": i for i in range(100)}, tags=["batch"])
        await _until(lambda: b.stats.invalidations_received >= 1)
        assert len(await b.get_many([f"k{i}" for i in range(100)])) == 100
        assert len(b.memory) == 100  # kept; no await since, so its bookkeeping still waits
        await b.invalidate_tags(["batch"])
        assert len(b.memory) == 0
        assert await b.get_many(["k1"]) == {}  # gone from L2 as well
        assert b.stats.l1_hits == 0


async def test_tenants_never_collide_and_invalidations_stay_in_their_workspace(
    redis_url: str, namespace: str
) -> None:
    """Equal keys in two workspaces stay apart in Redis; invalidating one spares the other."""
    async with _cache(redis_url, namespace) as a, _cache(redis_url, namespace) as b:
        for ws in (1, 2):
            await a.set("settings", {"ws": ws}, tags=["workspace:x"], workspace=ws)
            await a.set("other", ws, workspace=ws)
        await a.invalidate_tags(["workspace:x"], workspace=1)
        await a.invalidate_pattern("*", workspace=1)
        b.memory.clear()  # read Redis itself
        assert await b.get_many(["settings", "other"], workspace=1) == {}
        assert await b.get_many(["settings", "other"], workspace=2) == {
            "settings": {"ws": 2},
            "other": 2,
        }


HOSTILE = [
    "glob*?[]\\{}",
    "*",
    "k" * 10_000,
    b"\x00\xff\xfe raw bytes",
    "nul\x00inside",
    "lone \udcff surrogate",
    "newline\r\nSET x y",
    "🙂 emoji",
]


@pytest.mark.parametrize("key", HOSTILE, ids=range(len(HOSTILE)))
async def test_hostile_keys_round_trip_through_redis(
    redis_url: str, namespace: str, key: str | bytes
) -> None:
    """Glob, NUL, CRLF, surrogate, raw-byte and huge keys are stored, scoped and deleted alone."""
    async with _cache(redis_url, namespace) as a, _cache(redis_url, namespace) as b:
        await a.set(key, "value", workspace=7)
        await a.set("plain", "kept", workspace=7)
        assert await b.get(key, workspace=7) == "value"
        assert await b.get(key, workspace=8) is None
        await a.delete(key, workspace=7)
        b.memory.clear()
        assert await b.get(key, workspace=7) is None
        assert await b.get("plain", workspace=7) == "kept"


async def test_a_pattern_with_glob_characters_only_removes_literal_matches_in_redis(
    redis_url: str, namespace: str
) -> None:
    """invalidate_pattern("user:[1]:*") removes only keys starting with a literal "user:[1]:"."""
    async with _cache(redis_url, namespace) as a, _cache(redis_url, namespace) as b:
        for key in ("user:[1]:a", "user:1:a", "user:?:x", "user:a:x", "user:[1]:b"):
            await a.set(key, key)
        await a.invalidate_pattern("user:[1]:*")
        b.memory.clear()
        found = await b.get_many(["user:[1]:a", "user:1:a", "user:?:x", "user:a:x", "user:[1]:b"])
        assert sorted(found) == ["user:1:a", "user:?:x", "user:a:x"]


async def test_a_loader_shared_by_two_instances_runs_once_with_the_lock(
    redis_url: str, namespace: str
) -> None:
    """1,000 get_or_load calls over two instances with distributed_lock call the loader once."""
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return "value"

    async with _cache(redis_url, namespace) as a, _cache(redis_url, namespace) as b:
        results = await asyncio.gather(
            *(c.get_or_load("hot", load, distributed_lock=True) for c in (a, b) for _ in range(500))
        )
    assert set(results) == {"value"}
    assert calls == 1


async def test_a_loader_that_outlives_its_lock_lease_still_runs_once(
    redis_url: str, namespace: str
) -> None:
    """A 1 s load under a 0.3 s lease keeps its lock: the other instance waits for its value."""
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(1.0)  # > the 0.3 s lease: the watchdog must extend it
        return "value"

    async with _cache(redis_url, namespace) as a, _cache(redis_url, namespace) as b:
        first = asyncio.create_task(
            a.get_or_load("slow", load, distributed_lock=True, lock_lease=0.3)
        )
        await asyncio.sleep(0.5)
        second = await b.get_or_load("slow", load, distributed_lock=True, lock_lease=0.3)
        assert second == await first == "value"
    assert calls == 1


async def _calls_never_raise(cache: TieredCache, marker: Any) -> None:
    """Every API on a cache whose Redis is away: values from L1/loader, no exception."""
    assert await cache.get("warm") == "kept in L1"
    await cache.set("written-while-down", marker)
    assert await cache.get("written-while-down") == marker
    loaded = await cache.get_or_load(f"loaded-while-down-{marker}", lambda: _value(marker))
    assert loaded == marker
    assert await cache.get_many(["warm", "nothing"]) == {"warm": "kept in L1"}
    await cache.invalidate_tags(["some-tag"])
    await cache.invalidate_pattern("nothing:*")
    await cache.delete("nothing")


async def _value(value: Any) -> Any:
    return value


async def test_redis_killed_and_restarted(redis_server: RedisServer) -> None:
    """No exception reaches callers, health warn then pass, no stale value after recovery."""
    url = redis_server.url
    async with _cache(url, "fault") as a, _cache(url, "fault") as b:
        await a.set("warm", "kept in L1")
        await a.set("task", "v1")
        assert await b.get("task") == "v1"  # b has v1 in L1 now
        assert (await a.check()).status is HealthStatus.PASS

        redis_server.kill()
        for round_ in range(20):  # enough calls to open the breaker
            await _calls_never_raise(a, round_)
        await a.set("task", "v2")  # L2 still holds v1 when Redis returns: must not be served
        assert a.remote is not None
        assert a.remote.pending > 0
        assert (await a.check()).status is HealthStatus.WARN
        started = time.perf_counter()
        for _ in range(200):  # stale-while-down reads come from L1, fast
            assert await a.get("warm") == "kept in L1"
        assert time.perf_counter() - started < 5  # generous: only proves nothing blocks

        redis_server.start()
        await _until(lambda: a.backplane.connected and b.backplane.connected)
        await _until(lambda: a.remote is not None and a.remote.pending == 0)
        await _until(
            lambda: b.memory.get(b.key("task")) is None or b.memory.get(b.key("task")).value != "v1"
        )
        assert await b.get("task") != "v1"
        deadline = time.monotonic() + 5
        while (await a.check()).status is not HealthStatus.PASS:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        await a.set("after", "recovered")
        assert await b.get("after") == "recovered"  # via L2 again


async def test_a_frozen_redis_times_out_and_pending_deletes_are_replayed(
    redis_server: RedisServer,
) -> None:
    """Redis hangs (SIGSTOP) with data in it; a write meanwhile must win once it thaws."""
    url = redis_server.url
    async with _cache(url, "frozen") as a, _cache(url, "frozen") as b:
        await a.set("task", "v1")
        assert await b.get("task") == "v1"
        redis_server.freeze()
        try:
            started = time.perf_counter()
            await a.set("task", "v2")  # times out against L2 (0.5 s), kept pending
            assert time.perf_counter() - started < 3
            assert await a.get("task") == "v2"
        finally:
            redis_server.thaw()
        await _until(lambda: a.remote is not None and a.remote.pending == 0)
        await _until(lambda: b.memory.get(b.key("task")) is None)
        c_value = await b.get("task")
        assert c_value in (None, "v2")


async def test_clear_drops_a_workspace_including_digest_keys_and_nothing_else(
    redis_url: str, namespace: str
) -> None:
    """clear(workspace=1) removes its plain and digest keys in Redis; workspace 2 keeps its own."""
    async with _cache(redis_url, namespace) as a, _cache(redis_url, namespace) as b:
        long_key = "k" * 1000
        for ws in (1, 2):
            await a.set(long_key, ws, tags=["t"], workspace=ws)
            await a.set(b"\xff", ws, workspace=ws)
            await a.set("plain", ws, workspace=ws)
        await a.clear(workspace=1)
        await _until(lambda: b.stats.invalidations_received >= 1)
        b.memory.clear()
        assert await b.get_many([long_key, b"\xff", "plain"], workspace=1) == {}
        assert await b.get_many([long_key, b"\xff", "plain"], workspace=2) == {
            long_key: 2,
            b"\xff": 2,
            "plain": 2,
        }


async def test_an_l2_read_overtaken_by_a_delete_is_not_kept(redis_url: str, namespace: str) -> None:
    """An L2 read that a concurrent delete overtook may return the old value, never keep it."""
    async with _cache(redis_url, namespace) as cache:
        await cache.set("k", "old")
        cache.memory.clear()
        assert cache.remote is not None
        store = cache.remote.store
        plain_get = store.get

        async def slow_get(key: str) -> Any:
            found = await plain_get(key)
            await asyncio.sleep(0.05)  # the reply is on its way while the delete happens
            return found

        store.get = slow_get  # type: ignore[method-assign]
        reading = asyncio.create_task(cache.get("k"))
        await asyncio.sleep(0.01)
        await cache.delete("k")
        assert await reading == "old"  # concurrent with the delete: either answer is fair
        store.get = plain_get  # type: ignore[method-assign]
        assert await cache.get("k") is None  # but it was not kept in L1


async def test_a_lock_is_released_even_when_the_breaker_opened_during_the_load(
    redis_url: str, namespace: str
) -> None:
    """A load lock is freed though the breaker opened mid-load: the other instance never waits."""
    from corestone.resilience import State

    async with _cache(redis_url, namespace) as a, _cache(redis_url, namespace) as b:

        async def slow() -> str:
            await asyncio.sleep(0.3)
            return "A"

        loading = asyncio.create_task(
            a.get_or_load("k", slow, distributed_lock=True, lock_lease=0.6)
        )
        await asyncio.sleep(0.1)
        assert a.remote is not None
        a.remote.breaker.transition_to(State.FORCED_OPEN)  # Redis "blips" during the load
        assert await loading == "A"
        a.remote.breaker.transition_to(State.CLOSED)

        async def other() -> str:
            return "B"

        # The lock is gone (released directly, not through the breaker): b loads at once.
        got = await asyncio.wait_for(
            b.get_or_load("k", other, distributed_lock=True, lock_lease=0.6), 2
        )
        assert got in ("A", "B")
        assert b.stats.lock_waits == 0


@pytest.mark.parametrize(
    "payload", [[1, "x"], ["abc", "x"], "plain", [["t"], "v"], [["t"], "v", float("nan")]]
)
async def test_foreign_values_under_a_key_are_misses(
    redis_url: str, namespace: str, payload: Any
) -> None:
    """Malformed payloads or raw bytes under a key are misses, and get_or_load replaces them."""
    from corestone.cache import Stored

    async with _cache(redis_url, namespace) as cache:
        assert cache.remote is not None
        full = cache.key("k")
        await cache.remote.store.set(full, Stored(payload, time.time() + 60), ttl=60)
        await cache.remote.store.client.set(cache.key("raw"), b"ab")
        assert await cache.get("k") is None
        assert await cache.get_many(["k", "raw"]) == {}

        async def load() -> str:
            return "loaded"

        assert await cache.get_or_load("k", load) == "loaded"
        assert await cache.get_or_load("raw", load) == "loaded"


async def test_eager_refresh_works_on_an_instance_that_read_the_value_from_l2(
    redis_url: str, namespace: str
) -> None:
    """An instance that read a value from L2 refreshes it in the background past eager_refresh."""
    async with _cache(redis_url, namespace) as a, _cache(redis_url, namespace) as b:
        calls = 0

        async def load() -> int:
            nonlocal calls
            calls += 1
            return calls

        await a.get_or_load("hot", load, ttl=1.0, eager_refresh=0.5)
        assert await b.get_or_load("hot", load, ttl=1.0, eager_refresh=0.5) == 1  # from L2
        await asyncio.sleep(0.6)  # past half the ttl, still fresh
        assert await b.get_or_load("hot", load, ttl=1.0, eager_refresh=0.5) == 1
        await _until(lambda: b.stats.eager_refreshes == 1 and calls == 2)


async def test_a_load_overtaken_by_an_invalidation_it_has_not_heard_of_is_refused(
    redis_url: str, namespace: str
) -> None:
    """Another instance committed and invalidated while this one's loader read the old row;
    the backplane message has not arrived yet. Redis itself refuses the old value."""
    async with _cache(redis_url, namespace) as a, _cache(redis_url, namespace) as b:
        started = asyncio.Event()
        proceed = asyncio.Event()

        async def read_old_row() -> str:
            started.set()
            await proceed.wait()
            return "old row"

        loading = asyncio.create_task(a.get_or_load("task", read_old_row, tags=["entity:T:1"]))
        await started.wait()
        assert b.remote is not None
        # b's commit invalidates in Redis; a is not told (as if the message were late).
        await b.remote.store.invalidate_tags([b.keys.tag("entity:T:1")])
        proceed.set()
        assert await loading == "old row"  # the caller gets what it read …
        assert a.stats.stores_refused == 1  # … but it is not stored anywhere
        assert await a.get("task") is None
        assert await b.get("task") is None

        async def read_new_row() -> str:
            return "new row"

        assert await a.get_or_load("task", read_new_row, tags=["entity:T:1"]) == "new row"
        assert await b.get("task") == "new row"


async def test_get_many_finds_values_under_every_kind_of_key_and_size(
    redis_url: str, namespace: str
) -> None:
    """Keys get_many sends as bytes name what set wrote (non-ASCII, long, binary keys), and
    compressed values decode, on a second instance that reads them from L2."""
    keys: list[str | bytes] = ["plain", "ключ:ü:😀", "x" * 600, b"\xff\x00bin", "a b*?[c]"]
    values = {key: f"value of {key!r}" for key in keys} | {"big": "y" * 5000}
    async with _cache(redis_url, namespace) as a, _cache(redis_url, namespace) as b:
        for key, value in values.items():
            await a.set(key, value, workspace=7)
        await _until(lambda: b.stats.invalidations_received >= len(values))
        assert await b.get_many([*values, "absent"], workspace=7) == values
        assert b.stats.l2_hits == len(values)
        assert b.stats.l2_misses == 1
        assert await b.get_many(list(values), workspace=8) == {}
