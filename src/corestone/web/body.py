"""Request body limits: a size (413) and a time to receive it whole (408).

Both are enforced in the ``receive`` the app sees, so they hold for every framework and
every way a body can arrive (declared, chunked, both); nothing here raises into the app.
When a limit is hit before the app has answered, the client gets the problem+json
response and the app is told the client left (``http.disconnect``), so it finishes and
frees whatever it held (a connection slot, a database session).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corestone.clock import Clock, monotonic
from corestone.errors import PayloadTooLargeError
from corestone.observability.logging import get_logger
from corestone.web.problems import problem_for_error, problem_response

__all__ = ["BodySizeLimitMiddleware"]

log = get_logger("corestone.web")

# A Content-Length longer than this is no length any server could receive (and int()
# refuses strings over 4,300 digits).
_MAX_LENGTH_DIGITS = 19

_Answer = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_bytes`` (413) and bodies not received within a timeout (408).

    ``body_timeout_seconds`` bounds the total time the app spends waiting in ``receive``
    for body bytes, so a client trickling a byte at a time cannot hold its slot until the
    shutdown deadline. Time the app spends elsewhere (its own work before it reads a body
    that has arrived) is not counted. ``None`` turns it off. Once the body is complete,
    ``receive`` is passed through untimed: waiting for the client to leave (server-sent
    events, a streaming response listening for a disconnect) is not a body.
    A malformed ``Content-Length`` is a 400.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        *,
        body_timeout_seconds: float | None = 30.0,
        clock: Clock = monotonic,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            # isascii: str.isdigit() also accepts "²" and other digits int() refuses.
            if (
                not (declared.isascii() and declared.isdigit())
                or len(declared) > _MAX_LENGTH_DIGITS
            ):
                await _malformed_length(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        await _Guarded(self, scope, receive, send).run()

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLargeError(self.max_bytes)
        await problem_for_error(error, instance=scope["path"])(scope, receive, send)

    async def _too_slow(self, scope: Scope, receive: Receive, send: Send) -> None:
        seconds = self.body_timeout_seconds
        await problem_response(
            408,
            "request_timeout",
            f"the request body was not received within {seconds:g}s",
            instance=scope["path"],
            headers={"Connection": "close"},
            extensions={"timeout_seconds": seconds},
        )(scope, receive, send)


class _Guarded:
    """One request's body accounting: the ``receive`` and ``send`` the app gets."""

    def __init__(
        self, limits: BodySizeLimitMiddleware, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.limits = limits
        self.scope = scope
        self.receive = receive
        self.send = send
        # What is left of the time the client may keep us waiting for its body.
        self.patience = limits.body_timeout_seconds
        self.received = 0
        self.complete = False
        self.refused = False
        self.response_started = False

    async def run(self) -> None:
        try:
            await self.limits.app(self.scope, self.guarded_receive, self.guarded_send)
        except Exception:
            if not self.refused:
                raise
            # The app failed because we cut its body off (Starlette raises ClientDisconnect);
            # the client already has its answer, so this is not an error of the server.
            log.debug("request body refused", path=self.scope["path"])

    async def guarded_receive(self) -> Message:
        # Raising here would be caught by the framework's body parser and turned into
        # some other error; instead answer ourselves and tell the app the client left.
        if self.refused:
            return {"type": "http.disconnect"}
        if self.complete or self.patience is None:
            message = await self.receive()
        else:
            # Only the time spent waiting here counts: the app's own work before or
            # between reads (a slow query, a permit) is not the client's slowness.
            waiting_since = self.limits._clock()
            try:
                async with asyncio.timeout(self.patience):
                    message = await self.receive()
            except TimeoutError:
                return await self.refuse(self.limits._too_slow)
            self.patience -= self.limits._clock() - waiting_since
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
            if self.received > self.limits.max_bytes:
                return await self.refuse(self.limits._too_large)
            if not self.complete and self.patience is not None and self.patience <= 0:
                return await self.refuse(self.limits._too_slow)
        return message

    async def refuse(self, answer: _Answer) -> Message:
        self.refused = True
        if not self.response_started:  # else a second response start would be invalid
            await answer(self.scope, self.receive, self.send)
        return {"type": "http.disconnect"}

    async def guarded_send(self, message: Message) -> None:
        if self.refused:  # after our answer, whatever the app says goes nowhere
            return
        self.response_started = self.response_started or message["type"] == "http.response.start"
        await self.send(message)


async def _malformed_length(scope: Scope, receive: Receive, send: Send) -> None:
    await problem_response(
        400,
        "invalid_input",
        "Content-Length must be a whole number of bytes",
        instance=scope["path"],
        extensions={"field": "Content-Length"},
    )(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
