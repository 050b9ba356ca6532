"""Wire a FastAPI application to an :class:`~corestone.Infrastructure`.

:func:`instrument` adds the operational routes and the problem+json error handlers to
the app and returns it wrapped in corestone's middleware. The wrapping is outside
FastAPI on purpose: Starlette's own server-error middleware sits outside anything added
with ``add_middleware``, so only an outer wrapper sees every request with its
correlation id already bound — including the ones that crash.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final, TypeVar

import anyio
import svcs
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from corestone import context
from corestone.errors import CorestoneError
from corestone.observability.logging import get_logger
from corestone.runtime import Infrastructure
from corestone.web.contract import HeadAsGet, allowed_methods
from corestone.web.middleware import (
    BodySizeLimitMiddleware,
    HttpMetricsMiddleware,
    RequestContextMiddleware,
)
from corestone.web.problems import internal_error_problem, problem_for_error, problem_response
from corestone.web.routes import operations_router

__all__ = ["RequestScope", "infrastructure", "instrument", "request_scope", "service"]

log = get_logger("corestone.web")

T = TypeVar("T")
_SERVICES: Final = "corestone.services"  # the request's svcs container, in its request state
_ERROR: Final = "corestone.error"  # the error a handler below answered, for the scope's close


def instrument(app: FastAPI, infra: Infrastructure) -> ASGIApp:
    """Add health, metrics and error handling to ``app``; return the ASGI app to serve."""
    app.state.corestone = infra
    app.include_router(operations_router(infra.health, infra.metrics))
    app.add_exception_handler(CorestoneError, _on_corestone_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected_error)
    limited = BodySizeLimitMiddleware(
        _ServiceScopes(HeadAsGet(app)),
        max_bytes=infra.settings.http_max_body_bytes,
        body_timeout_seconds=infra.settings.http_body_timeout_seconds,
    )
    monitor = infra.db.monitor
    return RequestContextMiddleware(
        HttpMetricsMiddleware(limited, metrics=infra.metrics),
        query_headers=monitor is not None and monitor.options.response_headers,
    )


def infrastructure(request: HTTPConnection) -> Infrastructure:
    """The Infrastructure the app was instrumented with (HTTP requests and websockets)."""
    infra: Infrastructure = request.app.state.corestone
    return infra


async def request_scope(request: HTTPConnection) -> svcs.Container:
    """A FastAPI dependency: the request's service scope, closed when the request ends.

    Opened on first use and kept in the request's state, so every dependency of one
    request shares it; the app :func:`instrument` returns closes it after the response.
    A plain function, not a generator dependency: FastAPI runs each of those through an
    exit stack and a shielded context manager, which cost more per request than the
    cached read they wrap (docs/performance.md). Typed ``HTTPConnection``, not ``Request``:
    FastAPI gives a websocket route's dependencies the former only.
    """
    state = context.request_state()
    if state is None:
        raise RuntimeError("request_scope needs the app that corestone.web.instrument returns")
    container = state.get(_SERVICES)
    if container is None:
        container = state[_SERVICES] = infrastructure(request).services.scope()
    assert isinstance(container, svcs.Container)
    return container


RequestScope = Annotated[svcs.Container, Depends(request_scope)]

_resolvers: dict[type[Any], Callable[[HTTPConnection], Awaitable[Any]]] = {}


def service(svc_type: type[T]) -> Callable[[HTTPConnection], Awaitable[T]]:
    """A FastAPI dependency that gives the request's ``svc_type`` from its service scope.

    ``Tasks = Annotated[TaskService, Depends(service(TaskService))]``: one dependency
    where a resolver on top of :data:`RequestScope` would be two. The same callable is
    returned for a type every time, so FastAPI solves it once per request.
    """
    resolver = _resolvers.get(svc_type)
    if resolver is None:

        async def resolve(request: HTTPConnection) -> Any:
            return await (await request_scope(request)).aget(svc_type)

        resolve.__name__ = f"service_{svc_type.__name__}"
        resolver = _resolvers[svc_type] = resolve
    return resolver


class _ServiceScopes:
    """Close the service scope a request opened (its factories' cleanups) once it ends.

    Websockets get their request scope here: the request context middleware opens one
    for HTTP only, and :func:`request_scope` and ``bind_to_request`` need one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            with context.request_scope():
                await self._run(scope, receive, send)
        else:
            await self._run(scope, receive, send)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except BaseException as error:
            await _close_services(error)
            raise
        await _close_services(None)


async def _close_services(error: BaseException | None) -> None:
    state = context.request_state()
    if state is None:
        return
    container = state.pop(_SERVICES, None)
    if not isinstance(container, svcs.Container):
        return
    if error is None:  # answered inside FastAPI (a 4xx problem), as the scope saw it before
        answered = state.get(_ERROR)
        error = answered if isinstance(answered, BaseException) else None
    # Shielded: a request cancelled by a scope around it (a timeout, a server's shutdown)
    # would otherwise have this close cancelled at its first await, and the factories'
    # cleanups (a session's release) would never run. The error reaches the factories
    # that asked svcs for it (suppress_context_exit=False), as the generator dependency
    # gave it: one that propagated, or one corestone's handlers answered. (An error a
    # handler the application added answers is not seen here.)
    with anyio.CancelScope(shield=True):
        if error is None:
            await container.aclose()
        else:
            await container.aclose(type(error), error, error.__traceback__)


def _answered(error: Exception) -> None:
    """Keep the error an exception handler answers for the request's service scope."""
    state = context.request_state()
    if state is not None and _SERVICES in state:
        state[_ERROR] = error


async def _on_corestone_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, CorestoneError)
    _answered(error)
    if error.code not in ("invalid_input", "not_found", "unauthenticated", "forbidden"):
        log.warning("request failed", code=error.code, error=error.message)
    return problem_for_error(error, instance=request.url.path)


async def _on_validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    _answered(error)
    errors = [_describe_validation(e) for e in error.errors()]
    malformed = any(e["rule"] == "json_invalid" for e in errors)
    first = errors[0] if errors else {"field": None, "message": "invalid input"}
    detail = f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
    return problem_response(
        400 if malformed else 422,
        "invalid_input",
        detail,
        instance=request.url.path,
        extensions={"field": first["field"]},
        errors=errors,
    )


async def _on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    _answered(error)
    if error.status_code == 400 and isinstance(error.__cause__, ValueError):
        # FastAPI's "error parsing the body": bytes that are not UTF-8, so not JSON either.
        # The same problem as malformed JSON, so a client handles one shape.
        return _malformed_body(request, f"malformed JSON: {error.__cause__}")
    headers = dict(error.headers or {})
    if error.status_code == 405:
        # Starlette names the methods of the first route of the path only.
        headers["Allow"] = ", ".join(allowed_methods(request.app.router.routes, request.scope))
    codes = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}
    return problem_response(
        error.status_code,
        codes.get(error.status_code, "http_error"),
        str(error.detail),
        instance=request.url.path,
        headers=headers,
    )


def _malformed_body(request: Request, message: str) -> Response:
    return problem_response(
        400,
        "invalid_input",
        f"body: {message}",
        instance=request.url.path,
        extensions={"field": "body"},
        errors=[{"field": "body", "rule": "json_invalid", "message": message}],
    )


async def _on_unexpected_error(request: Request, error: Exception) -> Response:
    _answered(error)
    log.error("unhandled error", path=request.url.path, exc_info=error)
    return internal_error_problem(instance=request.url.path)


def _describe_validation(error: Any) -> dict[str, Any]:
    location = [
        part for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")
    ]
    field = ""
    for part in location:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    if not field and error.get("loc") and error["loc"][0] == "body":
        field = "body"
    rule = str(error.get("type", "invalid"))
    message = str(error.get("msg", "invalid"))
    if rule == "json_invalid":
        field, message = "body", "malformed JSON: " + str(error.get("ctx", {}).get("error", ""))
    return {"field": field or None, "rule": rule, "message": message}
