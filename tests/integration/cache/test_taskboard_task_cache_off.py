"""``TASKBOARD_TASK_CACHE=off``: task GETs read the database; the principal stays cached."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from corestone import Infrastructure, Settings
from corestone.testing import QueryCounter
from taskboard.app import TASK_CACHE_ENV, create_app, task_cache_enabled
from tests.integration.lifespan import lifespan_of

pytestmark = pytest.mark.timeout(120)


async def _client(
    database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch, cache: str | None
) -> AsyncIterator[tuple[httpx.AsyncClient, Infrastructure]]:
    if cache is not None:
        monkeypatch.setenv(TASK_CACHE_ENV, cache)
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        cache_namespace=f"tb{uuid.uuid4().hex[:10]}",
        env="test",
    )
    infra = Infrastructure(settings)
    async with lifespan_of(create_app(infra, worker=False)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tb") as client:
            yield client, infra


async def _selects_per_get(client: httpx.AsyncClient, infra: Infrastructure) -> list[int]:
    made = await client.post(
        "/api/users", json={"name": "Ada", "email": f"ada-{uuid.uuid4().hex[:8]}@example.com"}
    )
    headers = {"Authorization": f"Bearer {made.json()['token']}"}
    ws = (await client.post("/api/workspaces", json={"name": "Home"}, headers=headers)).json()
    url = f"/api/workspaces/{ws['id']}/tasks"
    task = (await client.post(url, json={"title": "t"}, headers=headers)).json()
    url = f"{url}/{task['id']}"
    assert (await client.get(url, headers=headers)).status_code == 200  # warms the caches
    counts = []
    for _ in range(3):
        with QueryCounter(infra.db.engine) as counter:
            got = await client.get(url, headers=headers)
            assert got.status_code == 200
            assert got.json() == task
        counts.append(sum(1 for event in counter.events if event == "sql:SELECT"))
    return counts


@pytest.mark.parametrize(("cache", "selects"), [(None, 0), ("on", 0), ("off", 1)])
async def test_the_task_cache_switch_decides_whether_a_warm_get_selects(
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    cache: str | None,
    selects: int,
) -> None:
    """Warm GETs select nothing with the task cache on, exactly the task row with it off."""
    async for client, infra in _client(database_url, redis_url, monkeypatch, cache):
        assert await _selects_per_get(client, infra) == [selects] * 3


def test_an_unknown_task_cache_value_is_refused() -> None:
    """A typo in the switch stops the service at start rather than silently caching."""
    assert task_cache_enabled({}) is True
    assert task_cache_enabled({TASK_CACHE_ENV: " OFF "}) is False
    with pytest.raises(ValueError, match=TASK_CACHE_ENV):
        task_cache_enabled({TASK_CACHE_ENV: "no"})
