"""Two taskboard instances on one PostgreSQL: an event committed on A reaches a stream on B.

Instance A runs the relay (``worker=True``); B only serves (``serve --no-worker``). With
Redis, A's relay wakes B's feed over pub/sub; without it, B's feed finds the event by
polling the outbox.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.integration.live.conftest import Cluster, Frame, SseReader, eventually


@pytest.fixture
async def pg_cluster(postgres_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield Cluster(postgres_url, tmp_path, stack, redis_url=redis_url)


async def _until(reader: SseReader, event_type: str) -> Frame:
    while True:
        frame = await reader.event()
        assert frame is not None, f"the stream ended before {event_type}"
        if frame.event == event_type:
            return frame


async def test_an_event_committed_on_a_reaches_a_stream_on_b_through_redis(
    pg_cluster: Cluster,
) -> None:
    """A task created through A reaches the stream open on B, woken through Redis (well
    inside B's slow poll), and B's readiness reports its wakes up."""
    a = await pg_cluster.instance(worker=True)
    b = await pg_cluster.instance(worker=False)
    b.feed.poll_seconds = 30.0  # only a wake can bring it in time
    _, ada = await a.signup()
    ws = await a.workspace(ada)
    reader = await pg_cluster.stream(b, ada, ws)
    assert isinstance(reader, SseReader)
    await eventually(lambda: b.feed.wakes.connected)
    await _until(reader, "workspace.created")
    started = time.monotonic()
    task = await a.task(ada, ws, "across")
    frame = await _until(reader, "task.created")
    assert frame.json()["data"]["task_id"] == task["id"]
    assert time.monotonic() - started < 15.0  # a wake, not the 30 s poll
    ready = (await b.client.get("/health/ready")).json()
    assert ready["checks"]["live-streams:responseTime"][0]["status"] == "pass"


async def test_without_redis_b_finds_the_event_by_polling(
    postgres_url: str, tmp_path: Path
) -> None:
    """Without Redis, B's feed polls the outbox and still delivers A's event."""
    async with AsyncExitStack() as stack:
        cluster = Cluster(postgres_url, tmp_path, stack)
        a = await cluster.instance(worker=True)
        b = await cluster.instance(worker=False)
        _, ada = await a.signup()
        ws = await a.workspace(ada)
        reader = await cluster.stream(b, ada, ws)
        assert isinstance(reader, SseReader)
        task = await a.task(ada, ws, "polled")
        frame = await _until(reader, "task.created")
        assert frame.json()["data"]["task_id"] == task["id"]
