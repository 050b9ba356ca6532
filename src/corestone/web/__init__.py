"""HTTP integration: middleware, problem+json, operational routes, a graceful server, and
cached principal and membership lookups for request dependencies."""

from corestone import _extras

# FastAPI, Starlette and uvicorn: a missing extra is named here, once, for every module below.
# The request scope and the access cache run on corestone.db, so a database extra is needed
# too: `corestone[web]` alone names it instead of failing on SQLAlchemy's import.
with (
    _extras.requires_extra(__name__, "web"),
    _extras.requires_extra(__name__, "postgres", "sqlite"),
):
    from corestone.web.access import (
        AccessCache,
        BearerToken,
        Grant,
        MembershipLoader,
        PrincipalLoader,
        bearer_token,
        forget_access,
        forget_access_after_commit,
        token_digest,
    )
    from corestone.web.app import RequestScope, infrastructure, instrument, request_scope, service
    from corestone.web.contract import (
        ANY_VERSION,
        HeadAsGet,
        PreconditionFailedError,
        StrictRoute,
        allowed_methods,
        if_match_version,
    )
    from corestone.web.middleware import (
        BodySizeLimitMiddleware,
        HttpMetricsMiddleware,
        RequestContextMiddleware,
        route_template,
    )
    from corestone.web.problems import (
        PROBLEM_CONTENT_TYPE,
        internal_error_problem,
        problem_for_error,
        problem_response,
    )
    from corestone.web.routes import HEALTH_CONTENT_TYPE, operations_router
    from corestone.web.server import WorkerProcess, http_url, listen, run, serve
    from corestone.web.workers import serve_workers


__all__ = [
    "ANY_VERSION",
    "HEALTH_CONTENT_TYPE",
    "PROBLEM_CONTENT_TYPE",
    "AccessCache",
    "BearerToken",
    "BodySizeLimitMiddleware",
    "Grant",
    "HeadAsGet",
    "HttpMetricsMiddleware",
    "MembershipLoader",
    "PreconditionFailedError",
    "PrincipalLoader",
    "RequestContextMiddleware",
    "RequestScope",
    "StrictRoute",
    "WorkerProcess",
    "allowed_methods",
    "bearer_token",
    "forget_access",
    "forget_access_after_commit",
    "http_url",
    "if_match_version",
    "infrastructure",
    "instrument",
    "internal_error_problem",
    "listen",
    "operations_router",
    "problem_for_error",
    "problem_response",
    "request_scope",
    "route_template",
    "run",
    "serve",
    "serve_workers",
    "service",
    "token_digest",
]
