"""Pure ASGI middleware: request context, HTTP RED metrics, and a request body limit.

Pure ASGI (no BaseHTTPMiddleware) so streaming responses and server-sent events pass
through untouched and the per-request cost stays a few function calls.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corestone import context
from corestone.errors import PayloadTooLargeError
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.web.problems import internal_error_problem, problem_for_error

__all__ = ["BodySizeLimitMiddleware", "HttpMetricsMiddleware", "RequestContextMiddleware"]

log = get_logger("corestone.web")

REQUEST_ID_HEADER = b"x-request-id"


class RequestContextMiddleware:
    """Accept or generate ``X-Request-ID``, bind it for the request, return it, log the request.

    An incoming id is kept only if it is short and made of safe characters; anything
    else (header injection, megabyte ids) is replaced with a fresh one. It is also the
    last line of defence: an exception nothing else handled becomes a 500 problem with
    the correlation id and no internals, logged once with its traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER)
        request_id = context.sanitize_correlation_id(incoming)
        state: dict[str, Any] = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER
                ]
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        started = time.perf_counter()
        with context.bind(correlation=request_id), context.request_scope():
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                if not state["started"]:
                    log.exception("unhandled error", method=scope["method"], path=scope["path"])
                    await internal_error_problem(instance=scope["path"])(
                        scope, receive, send_with_id
                    )
                # else: the framework already answered and logged it; the response is over.
            finally:
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=state["status"],
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )


class HttpMetricsMiddleware:
    """RED metrics per method, route template (never the raw path) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self._requests = metrics.counter(
            "http_requests_total", "HTTP requests handled.", ["method", "route", "status"]
        )
        self._latency = metrics.histogram(
            "http_request_duration_seconds",
            "Time from request start to the end of the response.",
            ["method", "route"],
        )
        self._in_flight = metrics.gauge("http_requests_in_flight", "HTTP requests being handled.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self._in_flight.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, record_status)
        finally:
            elapsed = time.perf_counter() - started
            self._in_flight.dec()
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            route = route_template(scope)
            self._requests.labels(method=method, route=route, status=str(status)).inc()
            self._latency.labels(method=method, route=route).observe(elapsed)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The template of the route that handled ``scope`` (``/tasks/{id}``), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(path, str):
        return str(scope.get("root_path", "")) + path
    app = scope.get("app")
    for candidate in getattr(app, "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            template = getattr(candidate, "path_format", None) or getattr(candidate, "path", None)
            return str(template or "unmatched")
    return "unmatched"


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, whether declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        # isascii: str.isdigit() also accepts "²" and other digits int() refuses.
        malformed = declared is not None and not (declared.isascii() and declared.isdigit())
        if declared is not None and (malformed or int(declared) > self.max_bytes):
            await problem_for_error(PayloadTooLargeError(self.max_bytes), instance=scope["path"])(
                scope, receive, send
            )
            return
        received = 0
        refused = False
        response_started = False

        async def counting_receive() -> Message:
            # Raising here would be caught by the framework's body parser and turned into
            # some other error; instead answer 413 ourselves and tell the app the client left.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not response_started:  # else a second response start would be invalid
                        error = PayloadTooLargeError(self.max_bytes)
                        await problem_for_error(error, instance=scope["path"])(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:  # after our 413, whatever the app says goes nowhere
                return
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The app failed because we cut its body off (Starlette raises ClientDisconnect);
            # the client already has its answer, so this is not an error of the server.
            log.debug("request body refused", path=scope["path"], limit_bytes=self.max_bytes)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
