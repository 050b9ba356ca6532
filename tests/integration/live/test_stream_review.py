"""The live stream under a hostile review: odd resume ids, many streams of one user."""

from __future__ import annotations

import orjson

from corestone.events.log import read_after
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
