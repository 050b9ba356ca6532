"""A stream cancelled or abandoned at each await leaves no stream, task or listener behind."""

from __future__ import annotations

import asyncio
import socket

import pytest

from corestone.db import Database
from corestone.errors import NotFoundError
from corestone.push import EventFeed, LocalWakes
from taskboard.app import MIGRATIONS
from tests.integration.live.conftest import Cluster, Instance, SseReader, eventually


def _watchers() -> int:
    """Disconnect watchers still running (one per open stream)."""
    return sum(
        1
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__name__", "") == "_watch_disconnect"
    )


async def _nothing_left(one: Instance) -> None:
    await eventually(lambda: one.feed.open_streams == 0 and not one.feed._streams)
    await eventually(lambda: _watchers() == 0)


async def test_a_client_gone_while_idle_leaves_nothing(cluster: Cluster) -> None:
    """Closing an idle stream's connection ends it: no stream, no watcher task."""
    one = await cluster.instance()
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    reader = await cluster.stream(one, ada, ws)
    assert isinstance(reader, SseReader)
    assert one.feed.open_streams == 1
    await reader.response.aclose()
    await _nothing_left(one)


async def test_a_client_gone_before_the_stream_starts_leaves_nothing(cluster: Cluster) -> None:
    """A request whose client hangs up right after sending it (before or while the stream
    opens) leaves nothing behind."""
    one = await cluster.instance()
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    host, port = one.url.removeprefix("http://").split(":")
    for _ in range(5):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(
            f"GET /api/workspaces/{ws}/events HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {ada['Authorization']}\r\nLast-Event-ID: 0\r\n\r\n".encode()
        )
        sock.close()
    await one.task(ada, ws, "after")  # an event for any stream that did open
    await _nothing_left(one)


async def test_a_client_gone_mid_write_leaves_nothing(cluster: Cluster) -> None:
    """A client that stops reading and then hangs up while the writer waits on it ends
    the stream; the writer and its watcher are gone."""
    one = await cluster.instance()
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    host, port = one.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /api/workspaces/{ws}/events HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {ada['Authorization']}\r\n\r\n".encode()
    )
    await eventually(lambda: one.feed.open_streams == 1)
    for _ in range(30):
        await one.task(ada, ws, "t" * 200)
    sock.close()
    await one.task(ada, ws, "after")
    await _nothing_left(one)


async def test_an_open_cancelled_at_each_await_registers_no_stream(database_url: str) -> None:
    """Cancelling ``open`` while it authorizes or reads the replay leaves no stream
    registered, and the feed's stop removes its wake listener."""
    database = Database(database_url)
    await database.start()
    try:
        from corestone.db import upgrade

        await upgrade(database, MIGRATIONS)
        gate = asyncio.Event()
        entered = asyncio.Event()

        async def slow_authorize(user: object, workspace: object) -> None:
            entered.set()
            await gate.wait()

        wakes = LocalWakes()
        feed = EventFeed(database, wakes, authorize=slow_authorize)
        await feed.start()
        assert len(wakes._listeners) == 1
        opening = asyncio.create_task(feed.open(1, 1, last_event_id="0"))
        await entered.wait()
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        assert feed.open_streams == 0
        # Cancelled while the replay reads the outbox (after it joined the feed). Not on
        # SQLite: aiosqlite finishes a cancelled query on its thread and calls back into
        # the loop, which the test has closed by then (a harness artefact, not a leak).
        gate.set()
        for _ in range(20 if database.dialect == "postgresql" else 0):
            opening = asyncio.create_task(feed.open(1, 1, last_event_id="0"))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            opening.cancel()
            try:
                response = await opening
            except asyncio.CancelledError:
                pass
            else:
                response.stream.end("disconnect")  # opened before the cancel landed
            assert feed.open_streams == 0

        async def stranger(user: object, workspace: object) -> None:
            raise NotFoundError("workspace not found")

        feed.authorize = stranger
        with pytest.raises(NotFoundError):
            await feed.open(1, 1)
        assert feed.open_streams == 0
        await feed.aclose()
        assert wakes._listeners == []
    finally:
        await database.aclose()
