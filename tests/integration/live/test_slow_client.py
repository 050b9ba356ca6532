"""A client that never reads is cut off; what the server holds for it stays bounded."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from corestone.events import DomainEvent
from taskboard.events import TaskUpdated
from tests.integration.live.conftest import Cluster, Instance, eventually

BUFFER_BYTES = 256 * 1024
EVENT_BYTES = 50_000
EVENTS = 120  # 6 MB offered to a client that reads nothing


def _transport_buffers(one: Instance) -> int:
    """Bytes waiting in the server's transports (uvicorn's connections), unsent."""
    server: Any = one.server._server
    return sum(
        c.transport.get_write_buffer_size()
        for c in server.server_state.connections
        if c.transport is not None and not c.transport.is_closing()
    )


async def _open_raw(one: Instance, token: str, ws: int) -> socket.socket:
    """A stream opened over a socket with a tiny receive window, then never read."""
    host, port = one.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    request = (
        f"GET /api/workspaces/{ws}/events HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    await loop.sock_sendall(sock, request)
    head = await asyncio.wait_for(loop.sock_recv(sock, 1024), 20)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


async def test_a_client_that_never_reads_is_dropped_with_memory_bounded(
    cluster: Cluster,
) -> None:
    """Events keep coming to a stream whose client reads nothing: its buffer never passes
    the bound, nor do the bytes its connection's transport holds; it is cut off (reason
    slow) and the connection closes."""
    one = await cluster.instance()
    feed = one.feed
    feed.buffer = (10_000, BUFFER_BYTES)
    feed.batch = 10
    _, ada = await one.signup()
    token = ada["Authorization"].removeprefix("Bearer ")
    ws = await one.workspace(ada)
    sock = await _open_raw(one, token, ws)
    await eventually(lambda: feed.open_streams == 1)
    (stream,) = next(iter(feed._streams.values()))
    most_buffered = most_in_transport = 0
    for i in range(EVENTS):
        event = DomainEvent.create(
            TaskUpdated(task_id=1, version=i + 1, fields=("x" * EVENT_BYTES,)),
            aggregate_type="task",
            aggregate_id=1,
            workspace_id=ws,
        )
        await one.infra.events.bus.record(event)
        most_buffered = max(most_buffered, stream.buffered_bytes)
        most_in_transport = max(most_in_transport, _transport_buffers(one))
    await eventually(lambda: feed.open_streams == 0)
    assert stream.reason == "slow"
    assert most_buffered <= BUFFER_BYTES
    # The transport holds at most one coalesced write beyond its high-water mark.
    assert most_in_transport <= BUFFER_BYTES + 2 * 64 * 1024
    # The server closed the connection: reading drains what the kernel holds, then EOF.
    loop = asyncio.get_running_loop()

    async def drained() -> bool:
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5) == b""
        except ConnectionResetError:
            return True

    await eventually(drained)
    sock.close()
    metrics = (await one.client.get("/metrics")).text
    assert 'corestone_live_clients_dropped_total{reason="slow"} 1.0' in metrics
