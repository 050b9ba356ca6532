"""An HTTP contract kept exactly: strict query strings and media types, HEAD, whole ``Allow``.

FastAPI ignores query parameters a route does not declare and keeps the last of a
repeated one, so a misspelt filter silently lists everything. :class:`StrictRoute`
refuses both, and a body that is not ``application/json``, before any dependency runs.
It costs little per request: the names it accepts are computed once per handler, a
request without a query string or a body pays one dictionary lookup, and one with a
query string is checked on the ``QueryParams`` FastAPI parses anyway (parsed once,
compared with set operations); only a refusal walks the parameters one by one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final

import fastapi.routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corestone.errors import CorestoneError, InvalidInputError, PreconditionRequiredError
from corestone.web.problems import problem_response

__all__ = [
    "ANY_VERSION",
    "HEAD_EXTENSION",
    "INT64",
    "HeadAsGet",
    "PreconditionFailedError",
    "StrictRoute",
    "allowed_methods",
    "field_value",
    "if_match_version",
]

_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class _Int64Convertor(Convertor[int]):
    """Starlette's ``int`` path convertor, minus its 500 for an id of thousands of digits.

    ``int()`` refuses more than 4,300 digits (``sys.get_int_max_str_digits``, a guard
    against quadratic parsing), and a convertor runs while routing, before any handler
    could answer a 422. Any number past 19 digits (leading zeros aside) is past 2**63,
    so it arrives as 2**63: out of every BIGINT range, refused by the route's bound.
    """

    regex = "[0-9]+"

    def convert(self, value: str) -> int:
        digits = value.lstrip("0")
        return int(digits or "0") if len(digits) <= 19 else 2**63

    def to_string(self, value: int) -> str:
        return str(value)


INT64: Final = "int64"
"""A path convertor: ``{task_id:int64}`` is ``{task_id:int}`` safe for any number of digits."""
register_url_convertor(INT64, _Int64Convertor())


class StrictRoute(APIRoute):
    """An APIRoute that refuses undeclared or repeated query parameters, and non-JSON bodies.

    Use it as ``APIRouter(route_class=StrictRoute)``. Unknown and repeated parameters are a
    422 ``invalid_input`` naming the parameter (rule ``unknown_parameter`` or
    ``repeated_parameter``); a body under another content type is a 415.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        # Called once per handler FastAPI builds, with the dependant solved: names are
        # fixed here, never per request.
        names = frozenset(_query_names(_effective_dependant(self)))
        takes_body = self.body_field is not None

        async def strict(request: Request) -> Response:
            scope = request.scope
            if scope.get("query_string"):
                # The QueryParams FastAPI reads for the parameters: parsed once, here.
                params = request.query_params
                keys = params.keys()
                if not names.issuperset(keys) or len(params.multi_items()) != len(keys):
                    refused = _query_problem(params.multi_items(), names, scope["path"])
                    if refused is not None:
                        return refused
            if takes_body:
                refused = _media_type_problem(scope)
                if refused is not None:
                    return refused
                request = _JsonRequest(scope, request.receive)
            return await handler(request)

        return strict


class _JsonRequest(Request):
    """A request whose body is JSON as RFC 8259 writes it: no NaN, no Infinity.

    Python's json reads ``NaN``, ``Infinity`` and ``-Infinity`` (and ``1e400`` as an
    infinity), none of which is JSON; another service's parser would refuse that body.
    Refused here as malformed (400, rule ``json_invalid``) rather than passed on as a
    float for a field's rule to trip over (a 422 that blames the field, not the body).
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(
                await self.body(), parse_constant=_not_json, parse_float=_finite_float
            )
        return self._json


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is out of a double's range")
    return value


def _effective_dependant(route: APIRoute) -> Dependant:
    """The dependant of the handler FastAPI is building for ``route`` right now.

    An included route is one object for every ``include_router``: FastAPI builds a
    handler per inclusion, from a dependant that adds the inclusion's dependencies (and
    their query parameters), and names the inclusion in a context variable while it
    calls ``get_route_handler``. Without it the route's own dependant is the one.
    """
    current = getattr(fastapi.routing, "_effective_route_context_var", None)
    context = current.get() if current is not None else None
    if context is not None and getattr(context, "original_route", None) is route:
        dependant: Dependant = context.dependant
        return dependant
    return route.dependant


def _query_names(dependant: Dependant) -> Iterable[str]:
    """The query parameters of a route and of all its dependencies."""
    yield from (field.alias for field in dependant.query_params)
    for sub in dependant.dependencies:
        yield from _query_names(sub)


def _query_problem(
    params: Iterable[tuple[str, str]], names: frozenset[str], path: str
) -> Response | None:
    """The 422 for the first unknown or repeated parameter of ``params``, if any."""
    seen: set[str] = set()
    for name, _ in params:
        if name not in names:
            rule, detail = "unknown_parameter", f"unknown query parameter {name!r}"
        elif name in seen:
            rule, detail = "repeated_parameter", f"query parameter {name!r} is given more than once"
        else:
            seen.add(name)
            continue
        if names:
            detail += f" (this operation takes: {', '.join(sorted(names))})"
        else:
            detail += " (this operation takes none)"
        return problem_response(
            422,
            "invalid_input",
            detail,
            instance=path,
            extensions={"field": name, "rule": rule},
        )
    return None


def _media_type_problem(scope: Scope) -> Response | None:
    """The 415 for a body that is not JSON; a request with no body at all passes."""
    content_type = None
    has_body = False
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            content_type = value
        elif key == b"content-length":
            has_body = value != b"0"
        elif key == b"transfer-encoding":
            has_body = True
    if content_type is None:
        if not has_body:
            return None
    else:
        media = content_type.split(b";", 1)[0].strip().lower()
        if media == b"application/json" or (
            media.startswith(b"application/") and media.endswith(b"+json")
        ):
            return None
    return problem_response(
        415,
        "unsupported_media_type",
        "the request body must be sent as Content-Type: application/json",
        instance=scope["path"],
        headers={"Accept": "application/json"},
        extensions={"field": "Content-Type", "rule": "media_type"},
    )


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route serves at the request's path (HEAD wherever GET is).

    Each method is routed as Starlette would route it, through ``matches`` only: an
    included router holds its routes behind it, and this runs on a 405 alone.
    """
    candidates = list(routes)
    allowed = []
    for method in _METHOD_ORDER:
        # Only what path matching reads: the routed scope carries the matched route's state.
        probe = {
            "type": "http",
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "method": method,
        }
        if any(route.matches(probe)[0] is Match.FULL for route in candidates):
            allowed.append(method)
    if "GET" in allowed and "HEAD" not in allowed:
        allowed.insert(allowed.index("GET") + 1, "HEAD")
    return allowed


HEAD_EXTENSION: Final = "corestone.head"
"""The ASGI scope extension :class:`HeadAsGet` adds to a HEAD it passes on as a GET."""


class HeadAsGet:
    """Answer HEAD as GET without its body, for every GET route (RFC 9110 §9.3.2).

    FastAPI routes serve only the methods they declare; load balancers and monitors
    probe with HEAD. The app sees a GET, so status and headers (Content-Length too)
    are the GET's; the scope outside keeps HEAD for logs and metrics.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A coroutine function, though a plain one returning the app's awaitable would save
        # a frame: servers and TestClient tell ASGI 3 from ASGI 2 by exactly that.
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headless(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        # Marked, so that a response that would never end by itself (a live stream) can
        # stop after its headers: the body it would write is dropped here anyway.
        extensions = {**(scope.get("extensions") or {}), HEAD_EXTENSION: {}}
        await self.app(dict(scope, method="GET", extensions=extensions), receive, headless)


class PreconditionFailedError(CorestoneError):
    """An ``If-Match`` that can match no version: weak, or not a version at all (412)."""

    code = "precondition_failed"

    def __init__(self, message: str, *, header: str = "If-Match") -> None:
        super().__init__(message)
        self.header = header

    @property
    def details(self) -> dict[str, object]:
        return {"field": self.header, "rule": "strong_etag"}


ANY_VERSION: Final = None
"""What :func:`if_match_version` gives for ``If-Match: *``: any current version will do."""

# RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, in a comma-separated list.
_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')
_VERSION = re.compile(r"[1-9][0-9]{0,17}")


def field_value(headers: Headers, name: str) -> str | None:
    """``name``'s value with its repeated lines combined, as RFC 9110 §5.3 reads them.

    A list-valued field (``If-Match``) sent on several lines is one comma-separated list,
    the same as a proxy joining them would forward. Reading the first line alone (what a
    ``Header()`` parameter does) would let a request mean one thing here and another
    behind a proxy.
    """
    values = headers.getlist(name)
    return ", ".join(values) if values else None


def if_match_version(value: str | None) -> int | None:
    """The version an ``If-Match`` requires, or :data:`ANY_VERSION` for ``*``.

    Resources whose ETag is their integer version (``"3"``). RFC 9110 §13.1.1 compares
    If-Match strongly: a weak tag never matches, nor does a tag that is not a version,
    so both are a 412, as a stale version is. Absent is a 428; a value that is no
    entity-tag list at all (``3``, ``abc``) is a 422; a list naming two versions is a
    422 too, since one write expects one version.
    """
    if value is None:
        raise PreconditionRequiredError(
            'updates need If-Match: "<version>" (the ETag of the resource you read)',
            header="If-Match",
        )
    text = value.strip()
    if text == "*":
        return ANY_VERSION
    tags: list[tuple[bool, str]] = []
    position = 0
    while position < len(text):
        match = _ENTITY_TAG.match(text, position)
        if match is None or match.end() == position:
            raise InvalidInputError(
                'If-Match must be "*" or quoted ETags, like "3" (RFC 9110 §13.1.1)',
                field="If-Match",
                rule="etag",
            )
        tags.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    if not tags:
        raise InvalidInputError(
            'If-Match must not be empty: send "*" or "3"', field="If-Match", rule="etag"
        )
    versions = {int(tag) for weak, tag in tags if not weak and _VERSION.fullmatch(tag)}
    if len(versions) > 1:
        raise InvalidInputError(
            "If-Match may name one version: a write expects exactly one",
            field="If-Match",
            rule="single_etag",
        )
    if not versions:
        raise PreconditionFailedError(
            'If-Match matches no version: it compares strongly, so a weak W/"3" never '
            'matches, and ETags here are versions ("3")'
        )
    return versions.pop()
