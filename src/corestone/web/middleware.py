"""Pure ASGI middleware: request context, HTTP RED metrics, and request body limits.

Pure ASGI (no BaseHTTPMiddleware) so streaming responses and server-sent events pass
through untouched and the per-request cost stays a few function calls.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corestone import context
from corestone.db._query_scope import scope_of_request
from corestone.observability.logging import get_logger, log_request
from corestone.observability.metrics import Metrics
from corestone.web.body import BodySizeLimitMiddleware
from corestone.web.problems import internal_error_problem
from corestone.web.route_labels import route_template, routes_of

__all__ = [
    "QUERY_COUNT_HEADER",
    "QUERY_TIME_HEADER",
    "REQUEST_ID_HEADER",
    "BodySizeLimitMiddleware",
    "HttpMetricsMiddleware",
    "RequestContextMiddleware",
    "route_template",
]

log = get_logger("corestone.web")

REQUEST_ID_HEADER = b"x-request-id"
QUERY_COUNT_HEADER = b"x-query-count"
QUERY_TIME_HEADER = b"x-query-time-ms"


class RequestContextMiddleware:
    """Accept or generate ``X-Request-ID``, bind it for the request, return it, log the request.

    An incoming id is kept only if it is short and made of safe characters; anything
    else (header injection, megabyte ids) is replaced with a fresh one. It is also the
    last line of defence: an exception nothing else handled becomes a 500 problem with
    the correlation id and no internals, logged once with its traceback.

    With ``query_headers`` (development: the query monitor's ``response_headers``), the
    response also says how many statements the request sent before it started, and
    their time: ``X-Query-Count`` and ``X-Query-Time-Ms``.
    """

    def __init__(self, app: ASGIApp, *, query_headers: bool = False) -> None:
        self.app = app
        self.query_headers = query_headers

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
                if self.query_headers:
                    headers += _query_headers(context.request_state())
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
                log_request(
                    "corestone.web",
                    method=scope["method"],
                    path=scope["path"],
                    status=state["status"],
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )


class HttpMetricsMiddleware:
    """RED metrics per method, route template (never the raw path) and status.

    The template includes the templates of the mounts on the way (``/ws/{ws}/tasks/{id}``),
    and is found for requests no route ran for (a body refused before the app).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        # The app's live route list (routes added later land in it): to route a request
        # again when no route ran for it, and to find mount templates.
        self._routes = routes_of(app)
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
            route = route_template(scope, self._routes)
            self._requests.labels(method=method, route=route, status=str(status)).inc()
            self._latency.labels(method=method, route=route).observe(elapsed)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _query_headers(unit: dict[str, object] | None) -> list[tuple[bytes, bytes]]:
    queries = scope_of_request(unit) if unit is not None else None
    count, seconds = (queries.queries, queries.seconds) if queries is not None else (0, 0.0)
    return [
        (QUERY_COUNT_HEADER, str(count).encode()),
        (QUERY_TIME_HEADER, f"{seconds * 1000:.2f}".encode()),
    ]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
