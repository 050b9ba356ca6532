"""A TCP relay to PostgreSQL that counts round trips and new connections, for the http suite.

Every server under test reaches PostgreSQL through one of these, so its database round
trips are measured on the wire rather than guessed from the code. The relay reads the
frontend (client → server) half of the PostgreSQL protocol just far enough to see message
boundaries, and counts the messages after which a client waits for the server:
``Sync`` (``S``, the end of an extended-query exchange), ``Query`` (``Q``, a simple query
such as ``BEGIN``) and ``Flush`` (``H``: asyncpg prepares a statement with Parse, Describe,
Flush and waits for the description before it binds, so a prepare is a round trip of its
own). It also counts the connections it accepts, so a pool that opens connections under
steady load shows.

It refuses TLS and GSS encryption itself (answering ``N`` to ``SSLRequest`` and
``GSSENCRequest``), so the stream stays readable whatever the client's ``ssl`` mode
prefers. Not a general proxy: local benchmarking only.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

__all__ = ["FrontendReader", "PgProxy", "ProxyCounts"]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_ROUND_TRIP_ENDS = frozenset(b"SQH")
_HIGH_WATER = 256 * 1024


@dataclass(frozen=True, slots=True)
class ProxyCounts:
    """Totals since the relay started; subtract two snapshots to measure a phase."""

    round_trips: int
    connections: int

    def __sub__(self, earlier: ProxyCounts) -> ProxyCounts:
        return ProxyCounts(
            self.round_trips - earlier.round_trips, self.connections - earlier.connections
        )


class FrontendReader:
    """Splits the client's byte stream into messages; counts those that end a round trip.

    Before the startup message, messages have no type byte (length, then a request
    code); an encryption request is answered by the relay and not forwarded. After it,
    every message is a type byte and a length that counts itself but not the type.
    """

    def __init__(self) -> None:
        self.round_trips = 0
        self._started = False
        self._header = bytearray()
        self._skip = 0  # body bytes of the current message still to pass through

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """The bytes to forward, and how many encryption requests to refuse with ``N``."""
        if self._started:
            self._scan(data)
            return data, 0
        return self._startup(data)

    def _scan(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            need = 5 - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) < 5:
                return
            kind = self._header[0]
            (length,) = struct.unpack_from("!I", self._header, 1)
            self._header.clear()
            self._skip = length - 4
            if kind in _ROUND_TRIP_ENDS:
                self.round_trips += 1

    def _startup(self, data: bytes) -> tuple[bytes, int]:
        self._header += data
        forward = bytearray()
        refused = 0
        while not self._started and len(self._header) >= 8:
            length, code = struct.unpack_from("!II", self._header)
            if len(self._header) < length:
                break
            message = bytes(self._header[:length])
            del self._header[:length]
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                refused += 1
                continue
            forward += message
            self._started = True  # a StartupMessage (or a CancelRequest, which ends it)
        if self._started:
            rest = bytes(self._header)
            self._header.clear()
            forward += rest
            self._scan(rest)
        return bytes(forward), refused


class _Upstream(asyncio.Protocol):
    """The relay's connection to PostgreSQL: passes everything back to the client."""

    def __init__(self, client: _Client) -> None:
        self._client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._client.send(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client.close()

    def pause_writing(self) -> None:
        self._client.pause_reading()

    def resume_writing(self) -> None:
        self._client.resume_reading()


class _Client(asyncio.Protocol):
    """One accepted client connection; opens its own upstream connection."""

    def __init__(self, proxy: PgProxy) -> None:
        self._proxy = proxy
        self._reader = FrontendReader()
        self._transport: asyncio.Transport | None = None
        self._upstream: _Upstream | None = None
        self._pending: list[bytes] = []
        self._connecting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._transport.set_write_buffer_limits(high=_HIGH_WATER)
        self._proxy.adopt(self)
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(
                lambda: _Upstream(self), self._proxy.upstream_host, self._proxy.upstream_port
            )
        except OSError:
            self.close()
            return
        self._upstream = upstream
        assert upstream.transport is not None
        upstream.transport.set_write_buffer_limits(high=_HIGH_WATER)
        for chunk in self._pending:
            upstream.transport.write(chunk)
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        before = self._reader.round_trips
        forward, refused = self._reader.feed(data)
        self._proxy.round_trips += self._reader.round_trips - before
        if refused and self._transport is not None:
            self._transport.write(b"N" * refused)
        if not forward:
            return
        if self._upstream is None or self._upstream.transport is None:
            self._pending.append(forward)
        else:
            self._upstream.transport.write(forward)

    def connection_lost(self, exc: Exception | None) -> None:
        self._proxy.forget(self)
        if self._upstream is not None and self._upstream.transport is not None:
            self._upstream.transport.close()
        elif self._connecting is not None:
            self._connecting.cancel()

    def pause_writing(self) -> None:
        if self._upstream is not None and self._upstream.transport is not None:
            self._upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._upstream is not None and self._upstream.transport is not None:
            self._upstream.transport.resume_reading()

    def send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class PgProxy:
    """Listens on 127.0.0.1 (a spare port) and relays each connection to PostgreSQL.

    Use as an async context manager in the event loop that stays alive for the whole
    benchmark; :meth:`counts` is a snapshot of the totals.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.round_trips = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._clients: set[_Client] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not listening"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def counts(self) -> ProxyCounts:
        return ProxyCounts(self.round_trips, self.connections)

    async def __aenter__(self) -> PgProxy:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for client in list(self._clients):
                client.close()
            await self._server.wait_closed()
            self._server = None

    def _accept(self) -> _Client:
        return _Client(self)

    def forget(self, client: _Client) -> None:
        self._clients.discard(client)

    def adopt(self, client: _Client) -> None:
        self.connections += 1
        self._clients.add(client)
