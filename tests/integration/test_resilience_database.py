"""The database and Redis behind named breakers: only unavailability counts."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from sqlalchemy import text

from corestone.db import Database
from corestone.errors import CircuitOpenError, ConflictError, UnavailableError
from corestone.resilience import BreakerConfig, BreakerRegistry, State, guard_redis

CONFIG = BreakerConfig(window_size=10, minimum_calls=4, wait_in_open_seconds=60.0)


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, breakers=BreakerRegistry(CONFIG))
    await database.start()
    async with database.transaction() as tx:
        await tx.session.execute(text("CREATE TABLE guarded (id INTEGER PRIMARY KEY)"))
        await tx.session.execute(text("INSERT INTO guarded VALUES (1)"))
    yield database
    await database.aclose()


async def test_constraint_violations_do_not_count_as_failures(db: Database) -> None:
    """Ten duplicate-key errors leave the database breaker CLOSED with no failure."""
    assert db.breakers is not None
    breaker = db.breakers.get("database")
    for _ in range(10):
        with pytest.raises(ConflictError):
            async with db.transaction() as tx:
                await tx.session.execute(text("INSERT INTO guarded VALUES (1)"))
    snap = db.breakers.snapshot()[0]
    assert breaker.state is State.CLOSED
    assert snap.failed_calls == 0
    assert snap.successful_calls >= 10


async def test_an_open_database_breaker_rejects_without_touching_the_database(
    db: Database,
) -> None:
    """FORCED_OPEN: a transaction fails fast with CircuitOpenError, not a driver error."""
    assert db.breakers is not None
    db.breakers.get("database").transition_to(State.FORCED_OPEN)
    with pytest.raises(CircuitOpenError) as caught:
        async with db.transaction() as tx:
            await tx.session.execute(text("SELECT 1"))
    assert caught.value.name == "database"
    db.breakers.get("database").reset()
    async with db.transaction() as tx:
        assert (await tx.session.execute(text("SELECT 1"))).scalar() == 1


async def test_refused_connections_open_the_breaker_then_connects_stop() -> None:
    """A server that refuses connections opens the breaker; later calls are not attempted."""
    registry = BreakerRegistry(CONFIG)
    database = Database(
        f"postgresql+asyncpg://postgres@127.0.0.1:{_dead_port()}/nothing", breakers=registry
    )
    with pytest.raises(UnavailableError):
        await database.start()
    breaker = registry.get("database")
    from sqlalchemy.ext.asyncio import create_async_engine

    from corestone.resilience.integrations import guard_engine

    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{_dead_port()}/nothing")
    guard_engine(engine, breaker)
    errors = []
    for _ in range(6):
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as error:
            errors.append(type(error).__name__)
    await engine.dispose()
    assert breaker.state is State.OPEN
    assert errors[-1] == "CircuitOpenError"
    assert errors.count("CircuitOpenError") >= 2
    assert registry.snapshot()[0].failed_calls == 4


async def test_redis_commands_go_through_their_breaker(redis_url: str) -> None:
    """Commands count; a server-side error (wrong type) is an answer, not a failure."""
    registry = BreakerRegistry(CONFIG)
    breaker = registry.get("redis")
    client = guard_redis(redis.Redis.from_url(redis_url), breaker)
    key = f"test:{uuid.uuid4().hex}"
    try:
        await client.set(key, "text")
        for _ in range(5):
            with pytest.raises(redis.ResponseError):
                await client.incr(key)
        assert breaker.state is State.CLOSED
        breaker.transition_to(State.FORCED_OPEN)
        with pytest.raises(CircuitOpenError):
            await client.get(key)
        breaker.reset()
    finally:
        await client.delete(key)
        await client.aclose()
    assert registry.snapshot()[0].failed_calls == 0


async def test_unreachable_redis_opens_its_breaker() -> None:
    """Connection errors count; once open, commands fail fast with CircuitOpenError."""
    breaker = BreakerRegistry(CONFIG).get("redis")
    client = guard_redis(
        redis.Redis.from_url(f"redis://127.0.0.1:{_dead_port()}/0", socket_connect_timeout=1),
        breaker,
    )
    kinds = []
    for _ in range(6):
        try:
            await client.get("x")
        except Exception as error:
            kinds.append(type(error).__name__)
    await client.aclose()
    assert breaker.state is State.OPEN
    assert kinds[-2:] == ["CircuitOpenError", "CircuitOpenError"]


async def test_client_timeouts_and_cancellations_leave_the_breaker_closed(
    postgres_url: str,
) -> None:
    """20 client-side timeouts in a row (asyncio.timeout, task cancellation, asyncpg
    command_timeout) are the caller's choice, not database failures: the breaker stays
    CLOSED, and the caller sees its own timeout, not UnavailableError."""
    registry = BreakerRegistry(CONFIG)
    sep = "&" if "?" in postgres_url else "?"
    database = Database(f"{postgres_url}{sep}command_timeout=0.05", breakers=registry)
    await database.start()
    slow = text("SELECT pg_sleep(2)")
    seen: list[str] = []

    async def slow_query() -> None:
        async with database.transaction() as tx:
            await tx.session.execute(slow)

    try:
        for round_ in range(20):
            kind = ("asyncio.timeout", "cancel", "command_timeout")[round_ % 3]
            if kind == "asyncio.timeout":
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.02):
                        await slow_query()
            elif kind == "cancel":
                task = asyncio.create_task(slow_query())
                await asyncio.sleep(0.02)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                with pytest.raises(TimeoutError) as caught:
                    await slow_query()
                assert not isinstance(caught.value, UnavailableError)
            seen.append(kind)
        breaker = registry.get("database")
        assert breaker.state is State.CLOSED
        assert registry.snapshot()[0].failed_calls == 0
        async with database.transaction() as tx:
            assert (await tx.session.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await database.aclose()
    assert len(seen) == 20
