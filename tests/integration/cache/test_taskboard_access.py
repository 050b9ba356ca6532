"""taskboard's cached principal and membership on two instances sharing a database and Redis.

Two taskboard apps run in this process, each with its own Database and TieredCache, with
Redis as L2 and backplane between them, on SQLite and on PostgreSQL. Changes made on one
instance must take effect on the other within the backplane delay, which the tests wait
for with bounded polling loops (never a time assertion).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio as redis

from corestone import AuthenticationError, Infrastructure, Settings
from corestone.testing import QueryCounter
from taskboard.app import create_app
from taskboard.domain.models import Role
from taskboard.services import UserService, WorkspaceService
from taskboard.services.access import access_for
from taskboard.services.tokens import TOKEN_PREFIX
from tests.integration.lifespan import lifespan_of

pytestmark = pytest.mark.timeout(180)

_POLLS = 500  # x 10 ms: far beyond the backplane delay, bounded all the same


@dataclass
class Instance:
    client: httpx.AsyncClient
    infra: Infrastructure


@dataclass
class Pair:
    a: Instance
    b: Instance
    namespace: str
    redis_url: str


@dataclass
class Setup:
    owner: dict[str, str]
    owner_id: int
    member: dict[str, str]
    member_token: str
    member_id: int
    ws: int
    task_id: int

    @property
    def url(self) -> str:
        return f"/api/workspaces/{self.ws}/tasks/{self.task_id}"


async def _instance(stack: AsyncExitStack, settings: Settings) -> Instance:
    infra = Infrastructure(settings)
    manager = await stack.enter_async_context(lifespan_of(create_app(infra, worker=False)))
    client = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://tb")
    )
    return Instance(client, infra)


@pytest.fixture
async def pair(database_url: str, taskboard_schema: None, redis_url: str) -> AsyncIterator[Pair]:
    namespace = f"tb{uuid.uuid4().hex[:10]}"
    settings = Settings(
        database_url=database_url, redis_url=redis_url, cache_namespace=namespace, env="test"
    )
    async with AsyncExitStack() as stack:
        a = await _instance(stack, settings)
        b = await _instance(stack, settings)
        for instance in (a, b):
            for _ in range(_POLLS):
                if instance.infra.cache.backplane.connected:
                    break
                await asyncio.sleep(0.01)
            assert instance.infra.cache.backplane.connected
        yield Pair(a, b, namespace, redis_url)


async def _signup(client: httpx.AsyncClient, name: str) -> tuple[int, str]:
    email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    response = await client.post("/api/users", json={"name": name, "email": email})
    assert response.status_code == 201, response.text
    return int(response.json()["user"]["id"]), str(response.json()["token"])


async def _setup(pair: Pair) -> Setup:
    """An owner with a workspace and a task (made on a), and a member who has not asked yet."""
    a = pair.a.client
    owner_id, owner_token = await _signup(a, "Owner")
    owner = {"Authorization": f"Bearer {owner_token}"}
    ws = (await a.post("/api/workspaces", json={"name": "Home"}, headers=owner)).json()["id"]
    member_id, member_token = await _signup(a, "Member")
    added = await a.post(
        f"/api/workspaces/{ws}/members",
        json={"user_id": member_id, "role": "member"},
        headers=owner,
    )
    assert added.status_code == 201, added.text
    task = await a.post(f"/api/workspaces/{ws}/tasks", json={"title": "one"}, headers=owner)
    assert task.status_code == 201, task.text
    member = {"Authorization": f"Bearer {member_token}"}
    return Setup(owner, owner_id, member, member_token, member_id, ws, task.json()["id"])


async def _eventually(status: Callable[[], Awaitable[int]], wanted: int) -> None:
    """Poll until ``status()`` answers ``wanted``, a bounded number of times."""
    seen = None
    for _ in range(_POLLS):
        seen = await status()
        if seen == wanted:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still {seen}, never {wanted}")


async def test_a_cached_task_get_makes_no_database_round_trip(pair: Pair) -> None:
    """A first GET loads principal, membership and task (one short read each); the next, none."""
    setup = await _setup(pair)
    b = pair.b
    dialect = b.infra.db.dialect
    with QueryCounter(b.infra.db.engine) as counter:
        first = await b.client.get(setup.url, headers=setup.member)
        assert first.status_code == 200, first.text
        # Three loads, each on its own short session on the read path: a checkout,
        # SQLAlchemy's begin and rollback events (on PostgreSQL the connection
        # autocommits, so neither reaches the server; on SQLite corestone's deferred
        # BEGIN statement does), one SELECT. Nothing else: no transaction around the request.
        per_load = ["checkout", "begin", "sql:SELECT", "rollback"]
        if dialect == "sqlite":
            per_load = ["checkout", "begin", "sql:BEGIN", "sql:SELECT", "rollback"]
        assert sorted(counter.events) == sorted(per_load * 3)
        counter.clear()
        for _ in range(5):
            again = await b.client.get(setup.url, headers=setup.member)
            assert again.status_code == 200
            assert again.json() == first.json()
        assert counter.events == [], counter.events
    with QueryCounter(pair.a.infra.db.engine) as counter:
        # The other instance finds all three in Redis: no round trip there either.
        elsewhere = await pair.a.client.get(setup.url, headers=setup.member)
        assert elsewhere.status_code == 200
        assert counter.events == [], counter.events


async def test_a_get_after_a_patch_on_the_other_instance_sees_the_new_version(
    pair: Pair,
) -> None:
    """After a PATCH on a commits, b's GET soon answers the new version, never the old one again."""
    setup = await _setup(pair)
    for round_ in range(5):
        cached = await pair.b.client.get(setup.url, headers=setup.member)
        version = cached.json()["version"]
        patched = await pair.a.client.patch(
            setup.url,
            json={"title": f"round {round_}"},
            headers={**setup.owner, "If-Match": f'"{version}"'},
        )
        assert patched.status_code == 200, patched.text

        async def version_on_b() -> int:
            return int((await pair.b.client.get(setup.url, headers=setup.member)).json()["version"])

        await _eventually(version_on_b, version + 1)
        seen = await pair.b.client.get(setup.url, headers=setup.member)
        assert seen.json()["title"] == f"round {round_}"
        assert seen.headers["ETag"] == f'"{version + 1}"'


async def test_a_revoked_token_is_refused_by_the_other_instance(pair: Pair) -> None:
    """Revoking a token on a makes b answer 401 for it, although b had it cached."""
    setup = await _setup(pair)
    assert (await pair.b.client.get(setup.url, headers=setup.member)).status_code == 200
    assert await UserService(pair.a.infra.db).revoke_tokens(setup.member_id) == 1

    async def status_on_b() -> int:
        return (await pair.b.client.get(setup.url, headers=setup.member)).status_code

    await _eventually(status_on_b, 401)
    assert (await pair.a.client.get(setup.url, headers=setup.member)).status_code == 401
    # The owner's token was not touched.
    assert (await pair.b.client.get(setup.url, headers=setup.owner)).status_code == 200


async def test_a_removed_member_gets_404_on_the_other_instance(pair: Pair) -> None:
    """Once the removal commits on a, b answers 404 for the workspace, never a cached 200."""
    setup = await _setup(pair)
    assert (await pair.b.client.get(setup.url, headers=setup.member)).status_code == 200
    owner = await UserService(pair.a.infra.db).authenticate(setup.owner["Authorization"][7:])
    await WorkspaceService(pair.a.infra.db).remove_member(owner, setup.ws, user_id=setup.member_id)

    async def status_on_b() -> int:
        return (await pair.b.client.get(setup.url, headers=setup.member)).status_code

    await _eventually(status_on_b, 404)
    for _ in range(3):  # and it stays so: the "no" is not cached, the "yes" is gone
        assert (await pair.b.client.get(setup.url, headers=setup.member)).status_code == 404
        assert (await pair.a.client.get(setup.url, headers=setup.member)).status_code == 404
    assert (await pair.b.client.get(setup.url, headers=setup.owner)).status_code == 200


async def test_a_role_change_reaches_the_other_instance(pair: Pair) -> None:
    """A member promoted to owner on a may add members through b as soon as b hears of it."""
    setup = await _setup(pair)
    members_url = f"/api/workspaces/{setup.ws}/members"
    newcomer, _ = await _signup(pair.a.client, "Newcomer")
    refused = await pair.b.client.post(
        members_url, json={"user_id": newcomer, "role": "member"}, headers=setup.member
    )
    assert refused.status_code == 403  # b has the member's role cached now
    owner = await UserService(pair.a.infra.db).authenticate(setup.owner["Authorization"][7:])
    await WorkspaceService(pair.a.infra.db).set_role(
        owner, setup.ws, user_id=setup.member_id, role=Role.OWNER
    )

    async def add_on_b() -> int:
        body = {"user_id": newcomer, "role": "member"}
        return (await pair.b.client.post(members_url, json=body, headers=setup.member)).status_code

    await _eventually(add_on_b, 201)


async def test_a_deleted_user_is_refused_by_the_other_instance(pair: Pair) -> None:
    """Deleting a user on a makes b answer 401 for their token, although b had it cached."""
    setup = await _setup(pair)
    assert (await pair.b.client.get(setup.url, headers=setup.member)).status_code == 200
    assert (await pair.b.client.get("/api/me", headers=setup.member)).status_code == 200
    await UserService(pair.a.infra.db).delete(setup.member_id)

    async def status_on_b() -> int:
        return (await pair.b.client.get("/api/me", headers=setup.member)).status_code

    await _eventually(status_on_b, 401)
    assert (await pair.b.client.get(setup.url, headers=setup.member)).status_code == 401
    assert (await pair.a.client.get(setup.url, headers=setup.member)).status_code == 401


async def _redis_keys(pair: Pair) -> int:
    client = redis.Redis.from_url(pair.redis_url)
    try:
        return len([key async for key in client.scan_iter(match=f"corestone:{pair.namespace}:*")])
    finally:
        await client.aclose()


async def test_a_flood_of_random_tokens_leaves_the_cache_as_it_was(pair: Pair) -> None:
    """10,000 unknown tokens are each refused, and neither L1 nor Redis gains an entry."""
    setup = await _setup(pair)
    assert (await pair.b.client.get(setup.url, headers=setup.member)).status_code == 200
    infra = pair.b.infra
    access = access_for(infra.db)
    entries, keys = len(infra.cache.memory), await _redis_keys(pair)
    refused = 0
    gate = asyncio.Semaphore(32)

    async def attempt() -> None:
        nonlocal refused
        async with gate:
            try:
                await access.authenticate(TOKEN_PREFIX + secrets.token_urlsafe(32))
            except AuthenticationError:
                refused += 1

    await asyncio.gather(*(attempt() for _ in range(10_000)))
    assert refused == 10_000
    assert len(infra.cache.memory) == entries
    assert await _redis_keys(pair) == keys
    # The known member is still served, from the cache.
    with QueryCounter(infra.db.engine) as counter:
        assert (await pair.b.client.get(setup.url, headers=setup.member)).status_code == 200
        assert counter.events == [], counter.events


async def test_malformed_tokens_are_refused_without_a_lookup(pair: Pair) -> None:
    """A token without taskboard's prefix, or too long, is a 401 before any cache or query."""
    infra = pair.b.infra
    with QueryCounter(infra.db.engine) as counter:
        for token in ("nope", TOKEN_PREFIX + "x" * 500, ""):
            response = await pair.b.client.get(
                "/api/me", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 401
        assert counter.events == [], counter.events
