"""AccessCache lookups made inside transactions never wait on a pool their callers hold.

A service checks membership inside its write transaction (taskboard's create, update,
delete, list). If a cold lookup waited for a second connection while every pooled
connection is held by such transactions, all of them would wait on each other until the
pool timeout: every request a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from corestone import UnavailableError
from corestone.cache import TieredCache
from corestone.db import Database, PoolOptions
from corestone.observability import Metrics
from corestone.web import AccessCache, Grant
from tests.integration.cache._support import fresh_namespace, tiered
from tests.integration.fault_proxy import FaultProxy

pytestmark = pytest.mark.timeout(60)

POOL = 2


async def _principal(session: AsyncSession, digest: str) -> Grant | None:
    await session.execute(text("SELECT 1"))
    return None


async def _membership(session: AsyncSession, workspace: int, principal: int | str) -> Grant | None:
    role = await session.scalar(text("SELECT 'member'"))
    return Grant(role, principal)


@pytest.fixture
async def setup(database_url: str, redis_url: str) -> AsyncIterator[tuple[Database, TieredCache]]:
    async with AsyncExitStack() as stack:
        namespace = await stack.enter_async_context(fresh_namespace(redis_url))
        cache = await stack.enter_async_context(tiered(redis_url, namespace))
        db = Database(
            database_url,
            cache=cache,
            pool=PoolOptions(size=POOL, timeout_seconds=2.0),
            metrics=Metrics(),
        )
        await db.start()
        stack.push_async_callback(db.aclose)
        yield db, cache


@pytest.mark.parametrize("read_only", [False, True], ids=["write", "read"])
async def test_cold_lookups_inside_transactions_holding_the_pool_do_not_deadlock(
    setup: tuple[Database, TieredCache], read_only: bool
) -> None:
    """Transactions holding every pooled connection each get their membership, not a 503."""
    db, cache = setup
    if db.dialect == "sqlite" and not read_only:
        pytest.skip("SQLite's write transactions hold the file's write lock: one at a time")
    access = AccessCache(db, load_principal=_principal, load_membership=_membership)
    holding, looked_up = asyncio.Barrier(POOL), asyncio.Barrier(POOL)

    async def request(user: int) -> str:
        async with db.transaction(read_only=read_only) as tx:
            await tx.session.execute(select(1))  # this request's connection
            await holding.wait()  # every pooled connection is now held
            role: str = await access.membership(1, user)
            await looked_up.wait()  # ... and stays held until every lookup is done
            return role

    roles = await asyncio.gather(*(request(user) for user in range(POOL)))
    assert roles == ["member"] * POOL
    # Read on the callers' own transactions, nothing was stored: the next lookup loads.
    assert len(cache.memory) == 0


async def test_a_lookup_on_an_unreachable_database_is_unavailable(postgres_url: str) -> None:
    """A principal lookup whose database refuses connections raises UnavailableError (a 503)."""
    url = make_url(postgres_url)
    proxy = FaultProxy(url.port or 5432, url.host or "127.0.0.1")
    port = await proxy.start()
    url = url.set(host="127.0.0.1", port=port)
    db = Database(url.render_as_string(hide_password=False), metrics=Metrics())
    await db.start()
    try:
        await proxy.shut()  # the pooled connection is reset, new connects are refused
        access = AccessCache(db, load_principal=_principal, load_membership=_membership)
        for _ in range(2):  # the reset connection first, then a refused connect
            with pytest.raises(UnavailableError):
                await access.authenticate("anything")
    finally:
        await db.aclose()
