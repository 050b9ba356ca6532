"""The live stream under a hostile review: odd resume ids, many streams of one user."""

from __future__ import annotations

import asyncio

import orjson

from corestone.events.log import read_after, read_window
from tests.integration.live.conftest import Cluster, Instance, SseReader, eventually


async def test_a_non_ascii_digit_resume_id_gets_reset_not_a_500(cluster: Cluster) -> None:
    """``²`` and ``١٢`` are digits to str.isdigit(); int() refuses the first and reads the
    second as 12. Either is garbage from a client: the stream opens with `reset`, and no
    stream is left behind by a failed open."""
    one = await cluster.instance()
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    path = f"/api/workspaces/{ws}/events"
    for last in ("²", "١٢", "1²"):
        request = one.client.build_request("GET", path, params={"last_event_id": last}, headers=ada)
        response = await one.client.send(request, stream=True)
        try:
            assert response.status_code == 200, (last, response.status_code)
            reader = SseReader(response)
            assert (await reader.next()) is not None  # retry
            frame = await reader.event()
            assert frame is not None
            assert frame.event == "reset", last
        finally:
            await response.aclose()


async def test_a_replay_larger_than_the_buffer_is_a_reset(cluster: Cluster) -> None:
    """A resume whose missed events would not fit the stream's buffer gets `reset`
    instead of holding them all: the replay waits in memory until the client reads it,
    so a member resuming from the oldest position on many streams, reading nothing, held
    up to max_replay events (256 KiB each at most) per stream, past every bound. A
    replay that fits is still replayed whole."""
    one = await cluster.instance()
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    first = await one.task(ada, ws, "first")
    for i in range(12):
        await one.task(ada, ws, f"{i} " + "x" * 150)
    await eventually(lambda: _backlog_empty(one))
    start = await _position_of(one, first["id"])
    frames, _ = one.feed.buffer
    one.feed.buffer = (frames, 2048)
    reader = await cluster.stream(one, ada, ws, last_event_id=str(start))
    assert isinstance(reader, SseReader)
    frame = await reader.event()
    assert frame is not None
    assert frame.event == "reset"
    await reader.response.aclose()
    one.feed.buffer = (frames, 64 * 1024)
    reader = await cluster.stream(one, ada, ws, last_event_id=str(start))
    assert isinstance(reader, SseReader)
    replayed = await reader.events(12)
    assert all(f.event != "reset" for f in replayed)


async def _backlog_empty(one: Instance) -> bool:
    size, _ = await one.infra.events.relay.refresh_stats()
    return size == 0


async def _position_of(one: Instance, task_id: int) -> int:
    """The outbox position of the task.created event of ``task_id``."""
    async with one.infra.db.transaction(read_only=True) as tx:
        rows = await read_after(tx.session, 0, limit=1000)
    for row in rows:
        if row.type == "task.created" and orjson.loads(row.body)["payload"]["task_id"] == task_id:
            return row.position
    raise AssertionError("no task.created for the task")


async def test_concurrent_opens_do_not_pass_the_cap_together(cluster: Cluster) -> None:
    """Eight streams opened at once with a cap of two: the cap was checked before the
    membership query and not after, so every open waiting on that query got in. Two
    open, the others get 503, and the feed counts two."""
    one = await cluster.instance(live_max_streams=2)
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    path = f"/api/workspaces/{ws}/events"

    async def open_one() -> int:
        request = one.client.build_request("GET", path, headers=ada)
        response = await one.client.send(request, stream=True)
        cluster.stack.push_async_callback(response.aclose)
        return response.status_code

    statuses = await asyncio.gather(*(open_one() for _ in range(8)))
    assert sorted(statuses) == [200, 200] + [503] * 6
    assert one.feed.open_streams == 2


async def test_one_user_cannot_take_every_stream_of_the_process(cluster: Cluster) -> None:
    """A user has at most ``CORESTONE_LIVE_MAX_STREAMS_PER_USER`` streams open in a
    process (the next gets 503 with Retry-After), so one member cannot take the whole cap
    from everyone else; another user still gets in, and closing one lets the first user
    in again."""
    one = await cluster.instance(live_max_streams_per_user=2)
    _, ada = await one.signup("Ada")
    bo_id, bo = await one.signup("Bo")
    ws = await one.workspace(ada)
    await one.add_member(ada, ws, bo_id)
    first = await cluster.stream(one, ada, ws)
    await cluster.stream(one, ada, ws)
    refused = await cluster.stream(one, ada, ws, expect=503)
    assert int(refused.headers["retry-after"]) >= 1
    assert isinstance(await cluster.stream(one, bo, ws), SseReader)
    assert isinstance(first, SseReader)
    await first.response.aclose()
    await eventually(lambda: one.feed.open_streams == 2)
    assert isinstance(await cluster.stream(one, ada, ws), SseReader)


async def test_a_removal_dispatched_while_the_open_authorizes_revokes_it(
    cluster: Cluster,
) -> None:
    """Bo's open reads his membership; before it returns, Ada removes him and the feed
    dispatches member.removed. The stream joined the feed only after authorize, so that
    revocation found no stream of his, and he got the workspace's events until the next
    re-check (a minute). Now the stream is there first: it ends with `revoked`."""
    one = await cluster.instance()
    _, ada = await one.signup()
    bo_id, bo = await one.signup("Bo")
    ws = await one.workspace(ada)
    await one.add_member(ada, ws, bo_id)
    feed = one.feed
    real = feed.authorize
    authorized, go = asyncio.Event(), asyncio.Event()

    async def slow_for_bo(user: object, workspace: object) -> object:
        result = await real(user, workspace)
        if str(user) == str(bo_id) and not authorized.is_set():
            authorized.set()
            await go.wait()
        return result

    feed.authorize = slow_for_bo
    opening = asyncio.create_task(cluster.stream(one, bo, ws))
    await authorized.wait()
    removed = await one.client.delete(f"/api/workspaces/{ws}/members/{bo_id}", headers=ada)
    assert removed.status_code == 204, removed.text
    await eventually(lambda: _backlog_empty(one))
    async with one.infra.db.transaction(read_only=True) as tx:
        newest = (await read_window(tx.session)).newest
    await eventually(lambda: (feed.position or 0) >= newest)
    go.set()
    reader = await opening
    assert isinstance(reader, SseReader)
    await one.task(ada, ws, "after")
    seen = []
    while (frame := await reader.event()) is not None:
        seen.append(frame.event)
    assert seen[-1:] == ["revoked"], seen  # and the stream ended
    assert "task.created" not in seen
