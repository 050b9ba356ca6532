"""The push suite's load generator: SSE clients as raw asyncio Protocols.

A thousand httpx streams would cost the generator more than the servers it measures, so
each client is a bare :class:`asyncio.Protocol` that writes one GET and then only counts
the bytes it receives. Two things it may also do, cheaply (C-level searches, once per
chunk):

- a *probe* finds ``"task_id":N`` in what arrives and records, per N, when it arrived
  (the latency of that event is that time minus its commit time);
- every client may *watch* for one marker (bytes) and record when it first saw it (the
  fan-out of one event: from its commit, or its first receipt, to the last client's).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

__all__ = ["SseClient", "close_all", "open_clients"]

_TASK_ID = re.compile(rb'"task_id":(\d+)')


@dataclass(eq=False)
class SseClient(asyncio.Protocol):
    """One stream: ``path`` on ``port``, with ``headers``; counts, probes and watches."""

    request: bytes
    started: bytes = b"retry: 2000"
    probe: bool = False
    received: int = 0
    ready: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    arrivals: dict[int, float] = field(default_factory=dict)
    watch: bytes | None = None
    seen_at: float | None = None
    on_seen: Callable[[], None] | None = None
    transport: asyncio.Transport | None = None
    closed: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.received += len(data)
        if not self.ready.done():
            if self.received == len(data) and not data.startswith(b"HTTP/1.1 200"):
                self.ready.set_exception(RuntimeError(data[:300].decode(errors="replace")))
                return
            if self.started in data:
                self.ready.set_result(None)
        if self.watch is not None and self.seen_at is None and self.watch in data:
            self.seen_at = now
            if self.on_seen is not None:
                self.on_seen()
        if self.probe:
            for match in _TASK_ID.finditer(data):
                self.arrivals.setdefault(int(match.group(1)), now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before the stream started: {exc}"))


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _request(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_clients(
    port: int,
    paths: Sequence[str],
    *,
    headers: dict[str, str],
    probe_every: int = 0,
    concurrency: int = 50,
    started: bytes = b"retry: 2000",
) -> list[SseClient]:
    """Open one stream per path on ``port`` (``concurrency`` at a time); each started
    (``started`` received: corestone's first frame; the peer sends only headers).

    Every ``probe_every``-th one is a probe (0: none).
    """
    loop = asyncio.get_running_loop()
    clients: list[SseClient] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, path: str) -> None:
        async with gate:
            probe = probe_every > 0 and index % probe_every == 0
            client = SseClient(_request(path, headers), started=started, probe=probe)
            await loop.create_connection(lambda: client, "127.0.0.1", port)
            clients.append(client)
            try:
                await asyncio.wait_for(client.ready, 30)
            except TimeoutError:
                raise RuntimeError(f"{path}: no stream in 30 s ({client.received} bytes)") from None

    await asyncio.gather(*(one(i, path) for i, path in enumerate(paths)))
    return clients


async def close_all(clients: Sequence[SseClient]) -> None:
    """Close every connection and let the servers see it."""
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    await asyncio.sleep(0.5)
