"""A TCP proxy in front of a real server that a test breaks on purpose.

One proxy for every fault the integration tests need: cut the client off right after it
sent a given message (COMMIT reaches the server, the reply never reaches the client), go
silent (a partition: nothing forwarded, nothing closed), or shut (connections reset, new
ones refused).
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["FaultProxy"]


class FaultProxy:
    """Forwards 127.0.0.1:<port> to ``upstream_port`` until a test says otherwise.

    - ``cut_after = b"COMMIT"``: the next client chunk holding it is forwarded, then the
      client is dropped before the reply; ``server_answered`` is set once the server
      replied (it acted on the message);
    - ``dark = True``: nothing more is forwarded either way and nothing is closed;
      ``swallowed`` is set once something was held back;
    - :meth:`shut`: open connections are reset and new ones refused.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.cut_after: bytes | None = None
        self.cut = False
        self.dark = False
        self.server_answered = asyncio.Event()
        self.swallowed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._cut_client: asyncio.StreamWriter | None = None  # the one connection cut
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on a spare port and return it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def shut(self) -> None:
        """Refuse new connections and reset the open ones."""
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers += [writer, up_writer]
        for task in (
            asyncio.create_task(self._to_server(reader, writer, up_writer)),
            asyncio.create_task(self._to_client(up_reader, writer, up_writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _to_server(
        self,
        reader: asyncio.StreamReader,
        client: asyncio.StreamWriter,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self.dark:
                    self.swallowed.set()
                    continue
                if self.cut_after is not None and not self.cut and self.cut_after in data.upper():
                    self.cut = True
                    self._cut_client = client
                    client.transport.abort()  # the client never sees the answer
                up_writer.write(data)
                await up_writer.drain()
        except OSError:
            pass
        finally:
            if client is not self._cut_client:  # a cut one waits for the server's answer
                up_writer.close()

    async def _to_client(
        self,
        up_reader: asyncio.StreamReader,
        client: asyncio.StreamWriter,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        try:
            while data := await up_reader.read(65536):
                if self.dark:
                    self.swallowed.set()
                    continue
                if client is self._cut_client:
                    self.server_answered.set()  # the reply to the cut message: the server acted
                    break
                client.write(data)
                await client.drain()
        except OSError:
            pass
        finally:
            client.close()
            up_writer.close()
