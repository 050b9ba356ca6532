"""corestone.web.AccessCache on its own: loaders of a test's choosing, both databases, real Redis.

The "database" the loaders read is a dict the test changes; each load still runs a
statement on the session it is given, so the session handling is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from corestone import AuthenticationError, CommitUnknownError, NotFoundError
from corestone.cache import TieredCache
from corestone.db import Database
from corestone.testing import QueryCounter
from corestone.web import (
    AccessCache,
    Grant,
    forget_access,
    forget_access_after_commit,
    token_digest,
)
from tests.integration.cache._support import fresh_namespace, tiered
from tests.integration.fault_proxy import FaultProxy

pytestmark = pytest.mark.timeout(60)

TOKEN = "tk_alice"


@dataclass
class World:
    """What the loaders read, how often they ran, and a gate to hold a load mid-way."""

    principals: dict[str, int] = field(default_factory=lambda: {token_digest(TOKEN): 7})
    members: dict[tuple[int, int | str], str] = field(default_factory=lambda: {(1, 7): "owner"})
    loads: int = 0
    read: asyncio.Event | None = None
    release: asyncio.Event | None = None

    async def principal(self, session: AsyncSession, digest: str) -> Grant | None:
        self.loads += 1
        await session.execute(text("SELECT 1"))
        found = self.principals.get(digest)
        if self.read is not None and self.release is not None:
            self.read.set()  # what it read is now fixed: hold it until the test says
            await self.release.wait()
        return None if found is None else Grant({"id": found}, found)

    async def membership(
        self, session: AsyncSession, workspace: int, principal: int | str
    ) -> Grant | None:
        self.loads += 1
        await session.execute(text("SELECT 1"))
        role = self.members.get((workspace, principal))
        return None if role is None else Grant(role, principal)


@dataclass
class Instances:
    world: World
    one: AccessCache
    other: AccessCache
    db: Database
    one_cache: TieredCache
    other_cache: TieredCache

    def entries(self) -> tuple[int, int]:
        return len(self.one_cache.memory), len(self.other_cache.memory)


@pytest.fixture
async def instances(database_url: str, redis_url: str) -> AsyncIterator[Instances]:
    """Two instances (database + cache each) sharing one database and one Redis namespace."""
    world = World()
    async with AsyncExitStack() as stack:
        namespace = await stack.enter_async_context(fresh_namespace(redis_url))
        caches = [await stack.enter_async_context(tiered(redis_url, namespace)) for _ in range(2)]
        dbs = [Database(database_url, cache=cache) for cache in caches]
        for db in dbs:
            await db.start()
            stack.push_async_callback(db.aclose)
        one, other = (
            AccessCache(
                db, load_principal=world.principal, load_membership=world.membership, ttl=60
            )
            for db in dbs
        )
        yield Instances(world, one, other, dbs[0], caches[0], caches[1])


async def _until_refused(access: AccessCache) -> None:
    for _ in range(500):
        try:
            await access.authenticate(TOKEN)
        except AuthenticationError:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the revoked token was still served")


async def test_a_cached_principal_and_membership_cost_no_query(instances: Instances) -> None:
    """Once loaded, both lookups are answered from the cache, here and on the other instance."""
    world = instances.world
    assert await instances.one.authenticate(TOKEN) == {"id": 7}
    assert await instances.one.membership(1, 7) == "owner"
    assert world.loads == 2
    with QueryCounter(instances.db.engine) as counter:
        for _ in range(3):
            assert await instances.one.authenticate(TOKEN) == {"id": 7}
            assert await instances.one.membership(1, 7) == "owner"
        assert counter.events == []
    assert await instances.other.authenticate(TOKEN) == {"id": 7}  # from Redis
    assert await instances.other.membership(1, 7) == "owner"
    assert world.loads == 2


async def test_unknown_tokens_and_non_members_are_never_cached(instances: Instances) -> None:
    """Each unknown token and each non-member check loads again; nothing is stored for them."""
    world, access = instances.world, instances.one
    before = instances.entries()
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            await access.authenticate("tk_unknown")
        with pytest.raises(NotFoundError):
            await access.membership(1, 8)
    assert world.loads == 6
    assert instances.entries() == before
    world.members[(1, 8)] = "member"  # added later: seen at once, nothing to invalidate
    assert await access.membership(1, 8) == "member"


async def test_a_revocation_reaches_the_other_instance(instances: Instances) -> None:
    """forget_access on one instance makes the other refuse the token it had cached."""
    world = instances.world
    assert await instances.other.authenticate(TOKEN) == {"id": 7}
    del world.principals[token_digest(TOKEN)]
    await forget_access(instances.one_cache, tokens=[token_digest(TOKEN)])
    await _until_refused(instances.other)


async def test_a_revocation_during_a_load_is_not_undone_by_it(instances: Instances) -> None:
    """A load that read a token before another instance revoked it answers, but stores nothing."""
    world = instances.world
    world.read, world.release = asyncio.Event(), asyncio.Event()
    loading = asyncio.create_task(instances.one.authenticate(TOKEN))
    await world.read.wait()
    # The other instance revokes (the row is gone, the tag invalidated) while the load waits.
    del world.principals[token_digest(TOKEN)]
    await forget_access(instances.other_cache, tokens=[token_digest(TOKEN)])
    world.release.set()
    assert await loading == {"id": 7}  # concurrent with the revocation: it may answer
    world.read = world.release = None
    with pytest.raises(AuthenticationError):  # but what it read was not kept
        await instances.one.authenticate(TOKEN)
    with pytest.raises(AuthenticationError):
        await instances.other.authenticate(TOKEN)


async def test_forgetting_after_commit_waits_for_the_commit(instances: Instances) -> None:
    """A rolled-back transaction drops nothing; a committed one drops the user's tokens."""
    db, world = instances.db, instances.world
    assert await instances.one.authenticate(TOKEN) == {"id": 7}

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction() as tx:
            forget_access_after_commit(tx, users=[7])
            raise Boom
    loads = world.loads
    # Hooks have run when the block is left: on this instance a drop would show now.
    assert await instances.one.authenticate(TOKEN) == {"id": 7}
    assert world.loads == loads  # still cached

    del world.principals[token_digest(TOKEN)]
    async with db.transaction() as tx:
        forget_access_after_commit(tx, users=[7])
    await _until_refused(instances.other)


async def test_a_removed_membership_is_refused_on_the_other_instance(instances: Instances) -> None:
    """forget_access(memberships=…) on one instance turns the other's cached "owner" into 404."""
    world = instances.world
    assert await instances.other.membership(1, 7) == "owner"
    del world.members[(1, 7)]
    await forget_access(instances.one_cache, memberships=[(1, 7)])
    for _ in range(500):
        try:
            await instances.other.membership(1, 7)
        except NotFoundError:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the removed membership was still served")


async def test_without_a_cache_every_lookup_loads(database_url: str) -> None:
    """A database with no cache still answers, by loading every time."""
    world = World()
    db = Database(database_url)
    await db.start()
    try:
        access = AccessCache(db, load_principal=world.principal, load_membership=world.membership)
        for _ in range(2):
            assert await access.authenticate(TOKEN) == {"id": 7}
        assert world.loads == 2
    finally:
        await db.aclose()


async def test_a_revocation_whose_commit_is_unknown_still_drops_the_token(
    postgres_url: str,
) -> None:
    """When the connection drops after COMMIT was sent, the token is dropped all the same."""
    world = World()
    url = make_url(postgres_url)
    proxy = FaultProxy(url.port or 5432)
    port = await proxy.start()
    proxied_url = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    async with TieredCache(namespace="access-unknown") as cache:
        db = Database(proxied_url, cache=cache)
        await db.start()
        try:
            access = AccessCache(
                db, load_principal=world.principal, load_membership=world.membership
            )
            assert await access.authenticate(TOKEN) == {"id": 7}
            with pytest.raises(CommitUnknownError):
                async with db.transaction() as tx:
                    await tx.session.execute(text("SELECT 1"))  # so that COMMIT is sent
                    forget_access_after_commit(tx, tokens=[token_digest(TOKEN)])
                    del world.principals[token_digest(TOKEN)]  # what the commit may have done
                    proxy.cut_after = b"COMMIT"
            await asyncio.wait_for(proxy.server_answered.wait(), 10)
            with pytest.raises(AuthenticationError):
                await access.authenticate(TOKEN)
        finally:
            await db.aclose()
            await proxy.aclose()


async def test_a_lookup_cancelled_mid_load_returns_its_connection(instances: Instances) -> None:
    """Cancelling a caller while its load holds a session closes it: the pool gets it back."""
    world, db = instances.world, instances.db
    world.read, world.release = asyncio.Event(), asyncio.Event()
    loading = asyncio.create_task(instances.one.authenticate(TOKEN))
    await world.read.wait()
    pool = db.engine.sync_engine.pool
    assert pool.checkedout() == 1  # type: ignore[attr-defined]
    loading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loading
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    world.read = world.release = None
    assert await instances.one.authenticate(TOKEN) == {"id": 7}  # nothing was stored, nor broken
    assert world.loads == 2


async def test_a_load_runs_on_the_read_path_with_no_transaction_round_trips(
    instances: Instances,
) -> None:
    """On PostgreSQL a lookup's statement autocommits: no BEGIN, no COMMIT or ROLLBACK sent.

    Asked of the driver itself, during the load: asyncpg knows whether the server has
    a transaction open on that connection. On SQLite the load is a deferred BEGIN.
    """
    seen: list[tuple[object, bool | None]] = []

    async def principal(session: AsyncSession, digest: str) -> Grant | None:
        connection = await session.connection()
        level = connection.sync_connection.get_execution_options().get("isolation_level")
        await session.execute(text("SELECT 1"))
        raw = (await connection.get_raw_connection()).driver_connection
        in_transaction = raw.is_in_transaction() if hasattr(raw, "is_in_transaction") else None
        seen.append((level, in_transaction))
        return Grant({"id": 7}, 7)

    access = AccessCache(
        instances.db, load_principal=principal, load_membership=instances.world.membership
    )
    assert await access.authenticate("tk_read_path") == {"id": 7}
    if instances.db.dialect == "postgresql":
        assert seen == [("AUTOCOMMIT", False)]
    else:
        assert len(seen) == 1
        assert seen[0][0] != "AUTOCOMMIT"
