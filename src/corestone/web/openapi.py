"""An OpenAPI document that says what the server does: problem+json errors, bearer auth.

FastAPI documents every error as a 422 ``HTTPValidationError`` under
``application/json``, a body corestone never sends, and leaves out the statuses its
handlers and middleware answer (400, 401, 413, 415, 500, 503 …). :func:`exact_openapi`
rewrites the generated document once: every operation lists the problems it can get
(those common to its shape, plus what the route declares with
:func:`problem_responses`), each under ``application/problem+json`` with the
:data:`PROBLEM_SCHEMA` of :mod:`corestone.web.problems` and the headers that status
carries (``WWW-Authenticate`` on 401, ``Accept`` on 415, ``Retry-After`` on 503);
authenticated operations (``openapi_extra=BEARER``) name an HTTP bearer scheme;
exclusive integer bounds become the inclusive ones a generated client can hold exactly.
What the document leaves out on purpose (HEAD, 405, the ``Accept`` request header) and
why: docs/contracts.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from fastapi import FastAPI

from corestone.web.problems import PROBLEM_CONTENT_TYPE

__all__ = [
    "BEARER",
    "PROBLEM_SCHEMA",
    "exact_openapi",
    "problem_responses",
    "required_header",
]

_PROBLEM_REF: Final = {"$ref": "#/components/schemas/Problem"}
_SCHEME: Final = "bearer"

BEARER: Final[dict[str, Any]] = {"security": [{_SCHEME: []}]}
"""``openapi_extra`` of an operation that needs ``Authorization: Bearer <token>``."""

PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "title": "Problem",
    "description": "RFC 9457 problem details, as corestone.web.problems builds them.",
    "type": "object",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "correlation_id": {"type": "string"},
        "field": {"type": "string", "description": "the input refused"},
        "rule": {"type": "string", "description": "the rule it broke"},
        "header": {"type": "string"},
        "current_version": {"type": "integer"},
        "timeout_seconds": {"type": "number"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["rule", "message"],
                "properties": {
                    "field": {"type": ["string", "null"]},
                    "rule": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

_DESCRIPTIONS: Final = {
    400: "Malformed body (not JSON, not UTF-8) or header",
    401: "Missing, malformed or unknown bearer token",
    403: "Authenticated but not allowed",
    404: "No such resource (or not visible to the caller)",
    408: "The body was not received in time",
    409: "Conflict with the current state",
    412: "An If-Match precondition failed",
    413: "The body is too large",
    415: "The body is not application/json",
    422: "Input breaks a rule: the problem names the field or parameter",
    428: "A conditional header is required",
    500: "An unexpected error: the problem carries only a correlation_id to quote",
    503: "A dependency is unavailable; retry later (Retry-After when known)",
}

# The response headers each problem status comes with (RFC 9110 §11.6.1, §10.2.3, §15.5.16).
_HEADERS: Final[dict[int, dict[str, Any]]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'the challenge: Bearer realm="api"',
            "required": True,
            "schema": {"type": "string"},
        }
    },
    415: {
        "Accept": {
            "description": "the media type a body must have: application/json",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    503: {
        "Retry-After": {
            "description": "seconds until the dependency is tried again, when a breaker knows",
            "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        }
    },
}

_BODY: Final = (400, 408, 413, 415)
_ALWAYS: Final = (422, 500, 503)
_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_DROPPED_SCHEMAS: Final = ("HTTPValidationError", "ValidationError")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these statuses answer a problem+json body."""
    return {status: _problem(status) for status in statuses}


def required_header(
    name: str, description: str, *, max_length: int, pattern: str | None = None
) -> dict[str, Any]:
    """``openapi_extra`` for a header the route checks itself (a 428 rather than a 422).

    Declare the parameter with ``include_in_schema=False`` and this instead: FastAPI's
    ``required`` would answer its own 422 before the route could say why. ``pattern`` is
    the syntax the route accepts, so a value outside it is known to be a 422.
    """
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length}
    if pattern is not None:
        schema["pattern"] = pattern
    return {
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": True,
                "description": description,
                "schema": schema,
            }
        ]
    }


def exact_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) the exact document; built once."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _exact(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _exact(document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in _DROPPED_SCHEMAS:
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    components.setdefault("securitySchemes", {})[_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <token>, the token POST /api/users returns.",
    }
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            if method in _METHODS:
                _exact_operation(operation)
    _inclusive_bounds(document)
    return document


def _exact_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    statuses = set(_ALWAYS)
    if "requestBody" in operation:
        statuses.update(_BODY)
    if any(p.get("in") == "path" for p in operation.get("parameters", ())):
        statuses.add(404)
    if operation.get("security"):
        statuses.add(401)
    for status in statuses:
        responses.setdefault(str(status), _problem(status))
    for code, response in responses.items():
        if code[:1] in ("4", "5"):
            response.update(_problem(int(code)) | {"description": response["description"]})


def _problem(status: int) -> dict[str, Any]:
    problem: dict[str, Any] = {
        "description": _DESCRIPTIONS.get(status, "Error"),
        "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}},
    }
    if status in _HEADERS:
        problem["headers"] = dict(_HEADERS[status])
    return problem


def _inclusive_bounds(node: Any) -> None:
    """``exclusiveMinimum: 0`` → ``minimum: 1`` on integers (and the same for maxima)."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            low = node.pop("exclusiveMinimum", None)
            if isinstance(low, int | float):
                node["minimum"] = int(low) + 1
            high = node.pop("exclusiveMaximum", None)
            if isinstance(high, int | float):
                node["maximum"] = int(high) - 1
        for value in node.values():
            _inclusive_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _inclusive_bounds(value)
