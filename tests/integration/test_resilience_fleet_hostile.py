"""Fleet mode against forged peers, bad keys, Redis restarts and cancelled callers (issue 19).

Every test runs on a real Redis: the shared one with a key prefix of its own, or a private
``redis_server`` when it must kill, restart or freeze the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as redis

from corestone.errors import CircuitOpenError
from corestone.observability.metrics import Metrics
from corestone.resilience import BreakerConfig, BreakerRegistry, CircuitBreaker, Fleet, State
from corestone.testing import ManualClock, RedisServer

CONFIG = BreakerConfig(
    window_size=10,
    minimum_calls=5,
    permitted_calls_in_half_open=1,
    wait_in_open_seconds=5.0,
    wait_multiplier=2.0,
    max_wait_in_open_seconds=10.0,
)


async def _until(condition: Callable[[], object], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _fleet(
    url: str,
    prefix: str,
    *names: str,
    clock: ManualClock | None = None,
    config: BreakerConfig = CONFIG,
    metrics: Metrics | None = None,
) -> AsyncIterator[tuple[Fleet, list[CircuitBreaker]]]:
    registry = BreakerRegistry(config, clock=clock or ManualClock(), metrics=metrics)
    breakers = [registry.get(name) for name in names]
    fleet = Fleet(registry, url=url, prefix=prefix, retry_seconds=0.05)
    await fleet.start()
    try:
        await _until(lambda: fleet.catch_ups >= 1)
        yield fleet, breakers
    finally:
        await fleet.aclose()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


@pytest.fixture
async def prefix(client: redis.Redis) -> AsyncIterator[str]:
    name = f"test:{uuid.uuid4().hex[:12]}:breakers"
    yield name
    keys = [key async for key in client.scan_iter(match=f"{name}:*")]
    if keys:
        await client.delete(*keys)


async def _redis_ms(client: redis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _change(**fields: Any) -> bytes:
    return orjson.dumps({"origin": "forger", "name": "payments", **fields})


async def test_forged_opens_and_durations_are_clamped_to_the_local_config(
    redis_url: str, prefix: str, client: redis.Redis
) -> None:
    """A day-long open and 2,000 opens from a peer: open at most 10 s, and no overflow."""
    clock = ManualClock()
    async with _fleet(redis_url, prefix, "payments", clock=clock) as (fleet, [breaker]):
        channel = fleet.channel
        await client.publish(channel, _change(state="open", opens=2000, until=time.time() + 86400))
        forged = _change(version=2**40, at_ms=0, state="open", opens=2000, open_for=86400.0)
        await client.publish(channel, forged)
        await _until(lambda: breaker.state is State.OPEN)
        assert breaker.retry_after() <= 10.0
        for _ in range(3):  # trials fail: re-opens grow the wait from the clamped count
            clock.advance(breaker.retry_after())
            with pytest.raises(ConnectionError):
                await breaker.acall(_refused)
            assert breaker.state is State.OPEN
            assert breaker.retry_after() <= 10.0
        clock.advance(breaker.retry_after())
        assert await breaker.acall(_fine) == "ok"
        assert breaker.state is State.CLOSED


async def _refused() -> None:
    raise ConnectionError("payments down")


async def _fine() -> str:
    return "ok"


async def test_a_late_joiner_counts_the_open_time_on_the_redis_clock(
    redis_url: str, prefix: str, client: redis.Redis
) -> None:
    """A stored OPEN 10 s long, stored 4 s ago by Redis's clock, leaves at most 6 s."""
    stored = _change(
        version=await _redis_ms(client),
        at_ms=await _redis_ms(client) - 4000,
        state="open",
        opens=1,
        open_for=10.0,
    )
    config = CONFIG.replace(wait_in_open_seconds=10.0)
    await client.set(f"{prefix}:state:payments", stored)
    async with _fleet(redis_url, prefix, "payments", config=config) as (_, [breaker]):
        assert breaker.state is State.OPEN
        assert 0.0 < breaker.retry_after() <= 6.0  # 4 s of the 10 already gone, by Redis


async def test_a_stale_closed_key_restored_by_a_restart_does_not_close_a_newer_open(
    redis_server: RedisServer,
) -> None:
    """Redis comes back (twice) from a snapshot holding an old CLOSED: the newer OPEN stands."""
    url = redis_server.url
    async with (
        _fleet(url, "restart", "payments") as (fleet_a, [a]),
        _fleet(url, "restart", "payments") as (fleet_b, [b]),
    ):
        b.transition_to(State.OPEN)
        await _until(lambda: a.state is State.OPEN)
        b.reset()  # B closes: its CLOSED is stored in the key...
        await _until(lambda: a.state is State.CLOSED)
        admin = redis.Redis.from_url(url)
        await admin.save()  # ... and persisted
        await admin.aclose()
        a.transition_to(State.OPEN)  # A's dependency fails: a newer OPEN, shared
        await _until(lambda: b.state is State.OPEN and fleet_a.published == 1)
        for _ in range(2):  # each time Redis is back with the snapshot: the old CLOSED key
            redis_server.kill()
            redis_server.start()
            seen_a, seen_b = fleet_a.catch_ups, fleet_b.catch_ups
            await _until(
                lambda a0=seen_a, b0=seen_b: fleet_a.catch_ups > a0 and fleet_b.catch_ups > b0
            )
            assert (a.state, b.state) == (State.OPEN, State.OPEN)


async def test_an_open_made_while_redis_was_down_wins_over_the_stored_closed(
    redis_server: RedisServer,
) -> None:
    """Opened during the outage, A stays open when Redis returns, and B learns it."""
    url = redis_server.url
    async with (
        _fleet(url, "outage", "payments") as (fleet_a, [a]),
        _fleet(url, "outage", "payments") as (_, [b]),
    ):
        b.transition_to(State.OPEN)
        await _until(lambda: a.state is State.OPEN)
        b.reset()
        await _until(lambda: a.state is State.CLOSED)
        admin = redis.Redis.from_url(url)
        await admin.save()
        await admin.aclose()
        redis_server.kill()
        a.transition_to(State.OPEN)  # unpublished: Redis is down
        await _until(lambda: fleet_a.redis_errors > 0)
        redis_server.start()
        await _until(lambda: b.state is State.OPEN)
        assert a.state is State.OPEN


async def test_the_publisher_keeps_every_breakers_unsent_change(redis_server: RedisServer) -> None:
    """Two breakers open during a Redis outage: both changes are published when it returns."""
    url = redis_server.url
    async with _fleet(url, "blip", "payments", "search") as (fleet, [payments, search]):
        redis_server.kill()
        payments.transition_to(State.OPEN)
        await _until(lambda: fleet.redis_errors >= 1)
        search.transition_to(State.OPEN)
        errors = fleet.redis_errors
        await _until(lambda: fleet.redis_errors >= errors + 3)  # retried a few times
        redis_server.start()
        await _until(lambda: fleet.published == 2)
        async with _fleet(url, "blip", "payments", "search") as (_, late):
            assert [breaker.state for breaker in late] == [State.OPEN, State.OPEN]


async def test_malformed_keys_and_messages_are_dropped_counted_and_harmless(
    redis_url: str, prefix: str, client: redis.Redis
) -> None:
    """Bad keys and messages are counted as dropped; the listener and catch-up go on."""
    now_ms = await _redis_ms(client)
    await client.set(f"{prefix}:state:bad", b"not json")
    await client.hset(f"{prefix}:state:wrongtype", "a", "b")
    valid_open = _change(version=now_ms, at_ms=now_ms, state="open", opens=1, open_for=5.0)
    await client.set(f"{prefix}:state:payments", valid_open)
    metrics = Metrics()
    names = ("bad", "wrongtype", "payments")
    async with _fleet(redis_url, prefix, *names, metrics=metrics) as (fleet, breakers):
        assert breakers[2].state is State.OPEN  # the good key was read past the bad ones
        assert fleet.dropped == 2
        for data in (b"\xff", b"[]", b'{"name": "payments"}', _change(version="9")):
            await client.publish(fleet.channel, data)
        closed = _change(version=now_ms + 1, at_ms=now_ms, state="closed", opens=0)
        await client.publish(fleet.channel, closed)
        await _until(lambda: breakers[2].state is State.CLOSED)
        assert fleet.dropped == 6
        await client.set(f"{prefix}:state:later", valid_open.replace(b"payments", b"later"))
        later = fleet.registry.get("later")
        await _until(lambda: later.state is State.OPEN)
    exposition = metrics.render().decode()
    assert 'corestone_breaker_fleet_dropped_messages_total{source="key"} 2.0' in exposition
    assert 'corestone_breaker_fleet_dropped_messages_total{source="channel"} 4.0' in exposition


async def test_aclose_closes_the_client_and_detaches_after_a_bad_key(
    redis_server: RedisServer,
) -> None:
    """With a malformed key loaded, aclose returns, closes Redis and detaches the breakers."""
    admin = redis.Redis.from_url(redis_server.url)
    try:
        await admin.set("bad:state:payments", b"{")
        registry = BreakerRegistry(CONFIG, clock=ManualClock())
        fleet = Fleet(registry, url=redis_server.url, prefix="bad", retry_seconds=0.05)
        await fleet.start()
        breaker = registry.get("payments")  # made after start: loaded by its own task
        await _until(lambda: fleet.dropped >= 1)
        await fleet.aclose()
        assert breaker.trial_gate is None
        deadline = time.monotonic() + 10
        while len(await admin.client_list()) > 1:  # the server sees the fleet's close
            assert time.monotonic() < deadline, "the fleet's Redis connections stayed open"
            await asyncio.sleep(0.05)
        breaker.transition_to(State.OPEN)
        await asyncio.sleep(0.2)
        assert await admin.get("bad:state:payments") == b"{"  # nothing published any more
    finally:
        await admin.aclose()


async def test_a_restarted_fleet_publishes_each_change_once(
    redis_url: str, prefix: str, client: redis.Redis
) -> None:
    """start, aclose, start again: a breaker made afterwards publishes one message per change."""
    registry = BreakerRegistry(CONFIG, clock=ManualClock())
    fleet = Fleet(registry, url=redis_url, prefix=prefix, retry_seconds=0.05)
    await fleet.start()
    await fleet.aclose()
    await fleet.start()
    pubsub = client.pubsub()
    await pubsub.subscribe(fleet.channel)
    try:
        registry.get("late").transition_to(State.OPEN)
        await _until(lambda: fleet.published >= 1)
        received = 0
        listen_until = time.monotonic() + 0.5  # time for a duplicate to arrive, if any
        while time.monotonic() < listen_until:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            received += message is not None
        assert (received, fleet.published) == (1, 1)
    finally:
        await fleet.aclose()
        await pubsub.aclose()


async def test_a_caller_cancelled_at_the_fleet_gate_leaves_the_breaker_able_to_close(
    redis_server: RedisServer,
) -> None:
    """Cancelled while the trial gate waits on Redis: a later trial runs and closes it."""
    clock = ManualClock()
    config = CONFIG.replace(wait_in_open_seconds=1.0)  # max_wait_in_half_open: 0 (unbounded)
    async with _fleet(redis_server.url, "gate", "payments", clock=clock, config=config) as (
        fleet,
        [breaker],
    ):
        breaker.transition_to(State.OPEN)
        await _until(lambda: fleet.published == 1)
        clock.advance(1.0)
        redis_server.freeze()
        try:
            caller = asyncio.create_task(breaker.acall(_fine))
            await asyncio.sleep(0.1)  # it holds the local trial permit, waiting on Redis
            assert not caller.done()
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
        finally:
            redis_server.thaw()
        deadline = time.monotonic() + 10
        while True:  # the fleet-wide permit the cancelled call may have taken expires
            try:
                assert await breaker.acall(_fine) == "ok"
                break
            except CircuitOpenError:
                assert time.monotonic() < deadline, "the breaker stayed half-open"
                await asyncio.sleep(0.1)
        assert breaker.state is State.CLOSED
