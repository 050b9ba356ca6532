"""taskboard's cached task reads on two instances sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest

from corestone import Infrastructure, Settings
from taskboard.app import create_app
from tests.integration.lifespan import lifespan_of

pytestmark = pytest.mark.timeout(120)


async def _instance(
    stack: AsyncExitStack, settings: Settings
) -> tuple[httpx.AsyncClient, Infrastructure]:
    infra = Infrastructure(settings)
    manager = await stack.enter_async_context(lifespan_of(create_app(infra)))
    client = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://tb")
    )
    return client, infra


@pytest.fixture
async def two(postgres_url: str, redis_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    settings = Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        cache_namespace=f"tb{uuid.uuid4().hex[:10]}",
        env="test",
    )
    async with AsyncExitStack() as stack:
        a, infra_a = await _instance(stack, settings)
        b, infra_b = await _instance(stack, settings)
        for infra in (infra_a, infra_b):
            while not infra.cache.backplane.connected:  # noqa: ASYNC110 - a property
                await asyncio.sleep(0.01)
        yield a, b


async def _setup(client: httpx.AsyncClient) -> tuple[dict[str, str], int, int]:
    response = await client.post(
        "/api/users", json={"name": "Ada", "email": f"ada-{uuid.uuid4().hex[:8]}@example.com"}
    )
    headers = {"Authorization": f"Bearer {response.json()['token']}"}
    ws = (await client.post("/api/workspaces", json={"name": "Home"}, headers=headers)).json()["id"]
    task = await client.post(f"/api/workspaces/{ws}/tasks", json={"title": "one"}, headers=headers)
    return headers, ws, task.json()["id"]


async def test_a_read_after_a_patch_on_another_instance_is_never_old(
    two: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """After a patch on a, b soon serves the new title, version and ETag, 20 rounds running."""
    a, b = two
    headers, ws, task_id = await _setup(a)
    url = f"/api/workspaces/{ws}/tasks/{task_id}"
    delays = []
    for round_ in range(20):
        cached = await b.get(url, headers=headers)  # cached on b
        assert cached.status_code == 200
        version = cached.json()["version"]
        patched = await a.patch(
            url, json={"title": f"round {round_}"}, headers={**headers, "If-Match": f'"{version}"'}
        )
        assert patched.status_code == 200, patched.text
        committed = time.perf_counter()
        while True:
            seen = await b.get(url, headers=headers)
            if seen.json()["version"] == version + 1:
                delays.append(time.perf_counter() - committed)
                break
            assert time.perf_counter() - committed < 2, "b kept serving the old version"
        assert seen.json()["title"] == f"round {round_}"
        assert seen.headers["ETag"] == f'"{version + 1}"'
    delays.sort()
    print(f"taskboard read-after-patch on another instance: p50 {delays[10] * 1e3:.2f} ms, "
          f"max {delays[-1] * 1e3:.2f} ms")  # fmt: skip


async def test_a_deleted_task_disappears_on_the_other_instance(
    two: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """A task cached on b reads 404 there after a deletes it, and 200 again after a restores it."""
    a, b = two
    headers, ws, task_id = await _setup(a)
    url = f"/api/workspaces/{ws}/tasks/{task_id}"
    assert (await b.get(url, headers=headers)).status_code == 200
    assert (await a.delete(url, headers=headers)).status_code == 204
    deadline = time.perf_counter() + 2
    while (await b.get(url, headers=headers)).status_code != 404:
        assert time.perf_counter() < deadline
    restored = await a.post(f"{url}/restore", headers=headers)
    assert restored.status_code == 200
    deadline = time.perf_counter() + 2
    while (await b.get(url, headers=headers)).status_code != 200:
        assert time.perf_counter() < deadline


async def test_another_workspace_cannot_read_a_cached_task(
    two: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """A task cached on b is a 404 to a stranger on both instances, by either workspace's path."""
    a, b = two
    headers, ws, task_id = await _setup(a)
    assert (
        await b.get(f"/api/workspaces/{ws}/tasks/{task_id}", headers=headers)
    ).status_code == 200
    other_headers, other_ws, _ = await _setup(b)
    for client in (a, b):
        # The same id under the stranger's own workspace, and under the owner's workspace.
        mine = await client.get(
            f"/api/workspaces/{other_ws}/tasks/{task_id}", headers=other_headers
        )
        assert mine.status_code == 404
        theirs = await client.get(f"/api/workspaces/{ws}/tasks/{task_id}", headers=other_headers)
        assert theirs.status_code == 404


async def test_ops_cache_reports_the_tiers(
    two: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """/api/ops/cache shows a closed L2 breaker, a live backplane and L1 hits, to a token only."""
    a, _ = two
    headers, ws, task_id = await _setup(a)
    for _ in range(3):
        await a.get(f"/api/workspaces/{ws}/tasks/{task_id}", headers=headers)
    body = (await a.get("/api/ops/cache", headers=headers)).json()
    assert body["l2"]["breaker"] == "closed"
    assert body["backplane"]["connected"] is True
    assert body["stats"]["l1_hits"] >= 2
    assert (await a.get("/api/ops/cache")).status_code == 401
