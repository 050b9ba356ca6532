"""Shutdown under a hostile review: a stream whose client reads nothing."""

from __future__ import annotations

from corestone.events import DomainEvent
from taskboard.events import TaskUpdated
from tests.integration.live.conftest import Cluster, eventually
from tests.integration.live.test_slow_client import _open_raw


async def test_shutdown_ends_a_stream_whose_writer_waits_on_a_client_that_never_reads(
    cluster: Cluster,
) -> None:
    """The process shuts down while a stream's writer waits in send for a client that
    reads nothing (its transport is full). The stream ended with `shutdown`, but its
    writer stayed in send, so the request held the drain open until the server's
    deadline. Now a writer waiting on the client is cut off at shutdown as a slow one
    is: it returns and the connection closes."""
    one = await cluster.instance()
    feed = one.feed
    feed.buffer = (10_000, 64 * 1024 * 1024)  # never cut off as slow here
    _, ada = await one.signup()
    token = ada["Authorization"].removeprefix("Bearer ")
    ws = await one.workspace(ada)
    sock = await _open_raw(one, token, ws)
    try:
        await eventually(lambda: feed.open_streams == 1)
        (stream,) = next(iter(feed._streams.values()))
        for i in range(60):  # 3 MB to a client with a 4 KiB receive window
            event = DomainEvent.create(
                TaskUpdated(task_id=1, version=i + 1, fields=("x" * 50_000,)),
                aggregate_type="task",
                aggregate_id=1,
                workspace_id=ws,
            )
            await one.infra.events.bus.record(event)
        await eventually(lambda: stream.in_send)
        feed.shut()
        assert stream.reason == "shutdown"
        await eventually(lambda: stream._writer is None)  # the writer returned
    finally:
        sock.close()
