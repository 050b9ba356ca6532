"""The live stream on one instance: frames, membership, resume, reset, the cap."""

from __future__ import annotations

from datetime import timedelta

import httpx

from tests.integration.live.conftest import Cluster, Frame, Instance, SseReader, eventually


async def _reader(
    cluster: Cluster, one: Instance, headers: dict[str, str], ws: int, **kw: object
) -> SseReader:
    reader = await cluster.stream(one, headers, ws, **kw)  # type: ignore[arg-type]
    assert isinstance(reader, SseReader)
    return reader


async def _until(reader: SseReader, event_type: str) -> Frame:
    """The first frame of ``event_type`` (earlier ones, such as workspace.created, skipped)."""
    while True:
        frame = await reader.event()
        assert frame is not None, f"the stream ended before {event_type}"
        if frame.event == event_type:
            return frame


async def _settled(one: Instance) -> None:
    """Wait until the relay has published everything recorded so far."""
    await eventually(lambda: _backlog_empty(one))


async def _backlog_empty(one: Instance) -> bool:
    size, _ = await one.infra.events.relay.refresh_stats()
    return size == 0


async def test_a_created_task_reaches_an_open_stream(cluster: Cluster) -> None:
    """A member's stream gets task.created with the outbox position as id and the event
    JSON, its payload under "data"."""
    one = await cluster.instance()
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    reader = await _reader(cluster, one, ada, ws)
    task = await one.task(ada, ws, "Ship it")
    frame = await _until(reader, "task.created")
    assert frame.id is not None
    assert int(frame.id) > 0
    body = frame.json()
    assert body["type"] == "task.created"
    assert body["data"]["task_id"] == task["id"]
    assert str(body["workspace_id"]) == str(ws)
    assert "payload" not in body


async def test_strangers_get_404_and_anonymous_callers_401(cluster: Cluster) -> None:
    """A non-member gets 404 and a caller without a valid token 401, as problem+json,
    before anything is streamed; neither holds a stream open."""
    one = await cluster.instance()
    _, ada = await one.signup()
    _, eve = await one.signup("Eve")
    ws = await one.workspace(ada)
    refused = await cluster.stream(one, eve, ws, expect=404)
    assert isinstance(refused, httpx.Response)
    assert refused.headers["content-type"].startswith("application/problem+json")
    missing = await cluster.stream(one, eve, ws + 1000, expect=404)
    assert isinstance(missing, httpx.Response)
    anonymous = await cluster.stream(one, {}, ws, expect=401)
    assert isinstance(anonymous, httpx.Response)
    forged = await cluster.stream(one, {"Authorization": "Bearer tb_nope"}, ws, expect=401)
    assert isinstance(forged, httpx.Response)
    assert one.feed.open_streams == 0


async def test_a_removed_member_is_revoked_and_gets_no_further_events(cluster: Cluster) -> None:
    """Removing a member ends their stream with `revoked`, before any later event; the
    owner's stream sees member.removed and the events after it."""
    one = await cluster.instance()
    _, ada = await one.signup()
    bo_id, bo = await one.signup("Bo")
    ws = await one.workspace(ada)
    await one.add_member(ada, ws, bo_id)
    bo_reader = await _reader(cluster, one, bo, ws)
    ada_reader = await _reader(cluster, one, ada, ws)
    await one.task(ada, ws, "before")
    await _until(bo_reader, "task.created")
    removed = await one.client.delete(f"/api/workspaces/{ws}/members/{bo_id}", headers=ada)
    assert removed.status_code == 204, removed.text
    await one.task(ada, ws, "after")
    frame = await bo_reader.event()
    assert frame is not None
    assert frame.event == "revoked"
    assert await bo_reader.next() is None  # the stream ended
    gone = await _until(ada_reader, "member.removed")
    assert gone.json()["data"]["user_id"] == bo_id
    after = await _until(ada_reader, "task.created")
    assert after.json()["data"]["task_id"] > 0
    again = await cluster.stream(one, bo, ws, expect=404)
    assert isinstance(again, httpx.Response)
    await eventually(lambda: one.feed.open_streams == 1)


async def test_resume_gets_exactly_the_missed_events_in_order(cluster: Cluster) -> None:
    """Reconnecting with Last-Event-ID replays exactly the workspace's events after it,
    in order, none of another workspace's, then goes on live without a repeat."""
    one = await cluster.instance()
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    other = await one.workspace(ada)
    reader = await _reader(cluster, one, ada, ws)
    await one.task(ada, ws, "seen")
    seen = await _until(reader, "task.created")
    await reader.response.aclose()
    await eventually(lambda: one.feed.open_streams == 0)
    missed = [await one.task(ada, ws, f"missed {i}") for i in range(3)]
    await one.task(ada, other, "elsewhere")
    await _settled(one)
    assert seen.id is not None
    resumed = await _reader(cluster, one, ada, ws, last_event_id=seen.id)
    frames = await resumed.events(3)
    assert [f.json()["data"]["task_id"] for f in frames] == [t["id"] for t in missed]
    ids = [int(f.id or 0) for f in frames]
    assert ids == sorted(ids)
    assert ids[0] > int(seen.id)
    live = await one.task(ada, ws, "live")
    frame = await _until(resumed, "task.created")
    assert frame.json()["data"]["task_id"] == live["id"]
    # The query form, for clients that cannot send the header, resumes the same way.
    request = one.client.build_request(
        "GET", f"/api/workspaces/{ws}/events", params={"last_event_id": seen.id}, headers=ada
    )
    response = await one.client.send(request, stream=True)
    cluster.stack.push_async_callback(response.aclose)
    by_query = SseReader(response)
    frames = await by_query.events(3)
    assert [f.json()["data"]["task_id"] for f in frames] == [t["id"] for t in missed]


async def test_an_id_outside_the_window_gets_reset(cluster: Cluster) -> None:
    """A pruned position, garbage and a position from the future each get `reset`
    first; live events follow."""
    one = await cluster.instance()
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    for i in range(3):
        await one.task(ada, ws, f"old {i}")
    await _settled(one)
    relay = one.infra.events.relay
    relay.retention = timedelta(seconds=0)
    await relay.prune()  # every sent row but the newest
    for last in ("1", "banana", "999999999", "-3", "9" * 40):
        reader = await _reader(cluster, one, ada, ws, last_event_id=last)
        frame = await reader.event()
        assert frame is not None
        assert frame.event == "reset", last
        await reader.response.aclose()
    reader = await _reader(cluster, one, ada, ws, last_event_id="1")
    assert (await reader.event()) is not None  # reset
    created = await one.task(ada, ws, "new")
    frame = await _until(reader, "task.created")
    assert frame.json()["data"]["task_id"] == created["id"]


async def test_over_the_cap_the_next_stream_gets_503_with_retry_after(cluster: Cluster) -> None:
    """With the per-process cap reached, the next stream is refused with 503 problem+json
    and Retry-After; once one closes, a new one opens."""
    one = await cluster.instance(live_max_streams=2)
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    first = await _reader(cluster, one, ada, ws)
    await _reader(cluster, one, ada, ws)
    refused = await cluster.stream(one, ada, ws, expect=503)
    assert isinstance(refused, httpx.Response)
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert int(refused.headers["retry-after"]) >= 1
    await first.response.aclose()
    await eventually(lambda: one.feed.open_streams == 1)
    await _reader(cluster, one, ada, ws)
    metrics = (await one.client.get("/metrics")).text
    assert 'corestone_live_clients_dropped_total{reason="cap"} 1.0' in metrics


async def test_head_answers_the_headers_and_holds_no_stream(cluster: Cluster) -> None:
    """HEAD gets a GET's status and content type at once, with no body, and leaves no
    stream open (it held one open forever before)."""
    one = await cluster.instance()
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    head = await one.client.head(f"/api/workspaces/{ws}/events", headers=ada)
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/event-stream")
    assert head.content == b""
    await eventually(lambda: one.feed.open_streams == 0)


async def test_bad_input_is_a_4xx_naming_the_field(cluster: Cluster) -> None:
    """An over-long last_event_id query is 422 naming it; an unknown query parameter and
    a workspace id past int64 are refused too; none opens a stream."""
    one = await cluster.instance()
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    path = f"/api/workspaces/{ws}/events"
    long_id = await one.client.get(path, params={"last_event_id": "1" * 65}, headers=ada)
    assert long_id.status_code == 422
    assert "last_event_id" in long_id.text
    unknown = await one.client.get(path, params={"cursor": "x"}, headers=ada)
    assert 400 <= unknown.status_code < 500
    huge = await one.client.get(f"/api/workspaces/{2**64}/events", headers=ada)
    assert huge.status_code in (404, 422)
    assert one.feed.open_streams == 0
