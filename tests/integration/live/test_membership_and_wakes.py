"""Membership checked again on open streams, and wakes that survive a lost Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from sqlalchemy import delete

from corestone.testing.redis_server import RedisServer
from corestone.web import forget_access_after_commit
from taskboard.domain.models import Membership
from tests.integration.live.conftest import Cluster, SseReader, eventually


async def test_a_membership_gone_without_an_event_is_revoked_by_the_recheck(
    cluster: Cluster,
) -> None:
    """A membership deleted behind the service's back (no member.removed event) ends the
    stream with `revoked` at the next re-check; the owner's stream stays."""
    one = await cluster.instance()
    _, ada = await one.signup()
    bo_id, bo = await one.signup("Bo")
    ws = await one.workspace(ada)
    await one.add_member(ada, ws, bo_id)
    bo_reader = await cluster.stream(one, bo, ws)
    ada_reader = await cluster.stream(one, ada, ws)
    assert isinstance(bo_reader, SseReader)
    assert isinstance(ada_reader, SseReader)
    async with one.infra.db.transaction() as tx:
        await tx.session.execute(
            delete(Membership).where(Membership.workspace_id == ws, Membership.user_id == bo_id)
        )
        forget_access_after_commit(tx, memberships=[(ws, bo_id)])
    assert await one.feed.recheck() == 1
    while (frame := await bo_reader.event()) is not None and frame.event != "revoked":
        pass
    assert frame is not None
    assert await bo_reader.next() is None
    assert one.feed.open_streams == 1


@pytest.fixture
async def own_redis(
    postgres_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Cluster, RedisServer]]:
    with RedisServer(tmp_path) as server:
        async with AsyncExitStack() as stack:
            yield Cluster(postgres_url, tmp_path, stack, redis_url=server.url), server


async def test_with_redis_gone_b_warns_and_still_delivers_by_polling(
    own_redis: tuple[Cluster, RedisServer],
) -> None:
    """Redis killed: B's readiness warns (wakes down, polling), A's event still reaches
    B's stream; Redis back: B's wakes reconnect and readiness passes again."""
    cluster, redis = own_redis
    a = await cluster.instance(worker=True, health_cache_seconds=0)
    b = await cluster.instance(worker=False, health_cache_seconds=0)
    _, ada = await a.signup()
    ws = await a.workspace(ada)
    reader = await cluster.stream(b, ada, ws)
    assert isinstance(reader, SseReader)
    await eventually(lambda: b.feed.wakes.connected)
    redis.kill()
    await eventually(lambda: not b.feed.wakes.connected)

    async def live_check() -> str:
        ready = (await b.client.get("/health/ready")).json()
        return str(ready["checks"]["live-streams:responseTime"][0]["status"])

    assert await live_check() == "warn"
    task = await a.task(ada, ws, "while Redis is away")
    while (frame := await reader.event()) is not None:
        if frame.event == "task.created":
            break
    assert frame is not None
    assert frame.json()["data"]["task_id"] == task["id"]
    redis.start()
    await eventually(lambda: b.feed.wakes.connected)

    async def passes() -> bool:
        return await live_check() == "pass"

    await eventually(passes)
