"""RFC 9457 problem details: the one shape every error response takes.

Maps corestone error codes to HTTP statuses (docs/contracts.md) and builds
``application/problem+json`` responses that name the field and the rule for bad input,
carry the correlation id, and never leak internals for unexpected failures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import Response

from corestone import context
from corestone.errors import CorestoneError

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "STATUS_BY_CODE",
    "internal_error_problem",
    "problem_for_error",
    "problem_response",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"

STATUS_BY_CODE: Mapping[str, int] = {
    "invalid_input": 422,
    "payload_too_large": 413,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "stale_version": 409,
    "precondition_required": 428,
    "precondition_failed": 412,
    "unavailable": 503,
    "circuit_open": 503,
    "bulkhead_full": 503,
    "load_timeout": 503,
    "workspace_required": 500,
    "saga_failed": 500,
    "saga_lease_lost": 503,
    "commit_unknown": 500,  # never 503: a retry could apply the write twice
}

# Members an extension may never replace.
_STANDARD = frozenset({"type", "title", "status", "code", "detail", "instance", "errors"})

_TITLES: Mapping[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    428: "Precondition Required",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> Response:
    """A problem+json response; ``extensions`` become extra members (``None`` ones dropped)."""
    import orjson

    body: dict[str, Any] = {
        "type": f"urn:corestone:problem:{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(
        {k: v for k, v in (extensions or {}).items() if v is not None and k not in _STANDARD}
    )
    if errors:
        body["errors"] = list(errors)
    correlation = context.correlation_id()
    if correlation:
        body["correlation_id"] = correlation
    return Response(
        orjson.dumps(body),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_CONTENT_TYPE,
    )


def problem_for_error(
    error: CorestoneError, *, instance: str | None = None, status: int | None = None
) -> Response:
    """The problem response for a corestone error, with its details as extensions.

    ``status`` overrides the code's: a stale version is a 409 in general and a 412 where
    the version came from an ``If-Match`` header (RFC 9110 §13.1.1).
    """
    status = status or STATUS_BY_CODE.get(error.code, 500)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    retry_after = error.details.get("retry_after")
    # math.ceil raises on inf and nan; a breaker with no known reset gets no Retry-After.
    if status == 503 and isinstance(retry_after, int | float) and math.isfinite(retry_after):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if status == 500:
        return internal_error_problem(instance=instance)
    return problem_response(
        status,
        error.code,
        error.message,
        instance=instance,
        headers=headers,
        extensions=error.details,
    )


def internal_error_problem(*, instance: str | None = None) -> Response:
    """A 500 that says nothing about the cause, only how to find it in the logs."""
    return problem_response(
        500,
        "internal",
        "an unexpected error occurred; quote the correlation_id when reporting it",
        instance=instance,
    )
