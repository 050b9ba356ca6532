"""One Server-Sent Events connection: a bounded buffer, and the ASGI response that drains it.

The feed (:mod:`corestone.push.feed`) encodes each event's frame once and hands the
same bytes to every stream that wants it with :meth:`LiveStream.offer`, which never
waits: it appends to the stream's buffer and wakes its writer. The writer (the ASGI
response, :class:`LiveStreamResponse`) takes everything buffered and writes it in one
``send``. A client that reads slower than events come fills its buffer; at
``max_frames`` frames or ``max_bytes`` bytes it is cut off (reason ``slow``): the
buffer is dropped and the connection closed, so a client that never reads costs at
most its buffer plus the transport's write buffer.

Frames (https://html.spec.whatwg.org/multipage/server-sent-events.html):
``id: <position>\\nevent: <type>\\ndata: <event JSON>\\n\\n``; a heartbeat is the comment
``: ping\\n\\n``; the first bytes are ``retry: 2000\\n\\n``.

Cutting a writer that is blocked: uvicorn's ``send`` waits while the transport is
paused (the client does not read), and no ASGI message can abort a response. So
:meth:`LiveStream.end` with ``slow`` cancels the writer's task if it is waiting in
``send``; the response then returns without finishing, and uvicorn closes the
connection (it logs "ASGI callable returned without completing response"). So does
``shutdown``, and the last chunks written after it wait at most
a second: a client that reads nothing does not hold the drain open.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from typing import Any

import orjson

from corestone._extras import requires_extra

with requires_extra(__name__, "web"):
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

from corestone.web.contract import HEAD_EXTENSION

__all__ = [
    "HEARTBEAT",
    "RESET",
    "RETRY",
    "REVOKED",
    "LiveStream",
    "LiveStreamResponse",
    "encode_frame",
]

RETRY = b"retry: 2000\n\n"
HEARTBEAT = b": ping\n\n"
RESET = b"event: reset\ndata: {}\n\n"
REVOKED = b"event: revoked\ndata: {}\n\n"

_CUT = ("slow", "shutdown")
"""Reasons that cut off a writer waiting on its client instead of waiting with it."""
_SHUTDOWN_SEND_SECONDS = 1.0
"""How long a write may wait on the client once the process is shutting down."""

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each frame on at once
]


def encode_frame(position: int, event_type: str, body: str) -> bytes:
    """The SSE frame of one event, from its outbox body (:meth:`DomainEvent.to_json`).

    The data is that JSON with ``payload`` named ``data`` (the HTTP contract: a client
    reads ``data.task_id``), on one line. Made once per event, whatever the streams.
    """
    try:
        event = orjson.loads(body)
        event["data"] = event.pop("payload", None)
        data = orjson.dumps(event)
    except (orjson.JSONDecodeError, TypeError, AttributeError):
        data = body.replace("\n", " ").encode()  # not an object: as it is, on one line
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (position, event_type.encode(), data)


class LiveStream:
    """One client's stream of one workspace: what is buffered for it, and why it ended.

    ``user`` and ``workspace`` are who opened it on what (the feed re-checks the
    membership); ``position`` is the last event position written or skipped, so a frame
    at or below it (an event both resumed and received live) is not written twice.
    """

    __slots__ = (
        "_buffered",
        "_frames",
        "_on_end",
        "_wake",
        "_writer",
        "in_send",
        "max_bytes",
        "max_frames",
        "position",
        "prefix",
        "reason",
        "user",
        "workspace",
    )

    def __init__(
        self,
        user: Any,
        workspace: str,
        *,
        max_frames: int,
        max_bytes: int,
        on_end: Callable[[LiveStream], None],
    ) -> None:
        self.user, self.workspace = user, workspace
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self.position = 0
        self.prefix = RETRY
        self.reason: str | None = None
        self.in_send = False
        self._frames: collections.deque[tuple[int, bytes]] = collections.deque()
        self._buffered = 0
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[Any] | None = None
        self._on_end = on_end

    @property
    def ended(self) -> bool:
        return self.reason is not None

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    def offer(self, position: int, frame: bytes) -> None:
        """Buffer ``frame`` (``position`` 0: not an event) and wake the writer; never waits.

        Over the buffer's bounds the client is cut off instead (reason ``slow``).
        """
        if self.reason is not None:
            return
        if len(self._frames) >= self.max_frames or self._buffered + len(frame) > self.max_bytes:
            self.end("slow")
            return
        self._frames.append((position, frame))
        self._buffered += len(frame)
        self._wake.set()

    def end(self, reason: str, frame: bytes = b"") -> None:
        """End the stream with ``reason`` after ``frame`` (nothing buffered after it is sent).

        ``slow`` drops the buffer; ``slow`` and ``shutdown`` cancel the writer if it waits
        for the client (a client that reads nothing would hold the drain open).
        """
        if self.reason is not None:
            return
        self.reason = reason
        if reason == "slow":
            self._frames.clear()
            self._buffered = 0
        elif frame:
            self._frames.append((0, frame))
            self._buffered += len(frame)
        if reason in _CUT and self.in_send and self._writer is not None:
            self._writer.cancel()
        self._wake.set()
        self._on_end(self)

    def take(self) -> bytes:
        """Everything buffered, as one chunk, without frames at or below ``position``."""
        frames, self._frames = self._frames, collections.deque()
        self._buffered = 0
        self._wake.clear()
        chunks = []
        for position, frame in frames:
            if position == 0:
                chunks.append(frame)
            elif position > self.position:
                self.position = position
                chunks.append(frame)
        return b"".join(chunks)

    async def wait(self) -> None:
        await self._wake.wait()


class LiveStreamResponse(Response):
    """The ASGI response that writes a :class:`LiveStream` until it ends or the client goes.

    However it ends, the stream ends (reason ``disconnect`` if nothing else), which
    calls its ``on_end``: the feed forgets it then.
    """

    def __init__(self, stream: LiveStream) -> None:
        self.stream = stream
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = list(_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = self.stream
        task = asyncio.current_task()
        stream._writer = task
        watcher = asyncio.create_task(_watch_disconnect(receive, stream))
        try:
            await _send(stream, send, {"type": "http.response.start", "status": 200,
                                       "headers": self.raw_headers})  # fmt: skip
            if scope.get("method") == "HEAD" or HEAD_EXTENSION in (scope.get("extensions") or {}):
                # HEAD: the headers a GET gets, and no stream (it would never end).
                stream.end("done")
                await _send(stream, send, {"type": "http.response.body", "more_body": False})
                return
            first, stream.prefix = stream.prefix, b""
            await _send(stream, send, _body(first + stream.take()))
            while stream.reason is None:
                await stream.wait()
                chunk = stream.take()
                if chunk and stream.reason != "slow":
                    await _send(stream, send, _body(chunk))
            if stream.reason not in ("slow", "disconnect"):
                await _send(stream, send, {"type": "http.response.body", "more_body": False})
        except asyncio.CancelledError:
            # Cut off while the client did not read: return without finishing the
            # response, and uvicorn closes the connection. Any other cancel goes on.
            if stream.reason not in _CUT or task is None or task.uncancel() > 0:
                raise
        except OSError:
            stream.end("disconnect")  # the connection failed under the write
        finally:
            stream._writer = None
            watcher.cancel()
            stream.end("disconnect")  # no-op if it ended already


def _body(chunk: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


async def _send(stream: LiveStream, send: Send, message: dict[str, Any]) -> None:
    """``send``, marked as waiting on the client (a cut-off cancels only such a wait)."""
    stream.in_send = True
    try:
        if stream.reason == "shutdown":  # the last chunks: a client that reads nothing
            async with asyncio.timeout(_SHUTDOWN_SEND_SECONDS):  # is cut off (TimeoutError
                await send(message)  # is an OSError: the response ends unfinished)
        else:
            await send(message)
    finally:
        stream.in_send = False


async def _watch_disconnect(receive: Receive, stream: LiveStream) -> None:
    """End ``stream`` when the client disconnects (the request has no body to read)."""
    with contextlib.suppress(Exception):  # a failed receive is a lost client too
        while (await receive())["type"] != "http.disconnect":
            pass
    stream.end("disconnect")
