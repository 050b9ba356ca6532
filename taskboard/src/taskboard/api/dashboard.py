"""The operations dashboard: ``GET /ops`` (the page) and ``GET /api/ops/dashboard`` (its data).

The page is a shell with no data in it: anyone may load it, like the page at ``/``, and
it signs in with a bearer token kept for the tab. Its script polls
``/api/ops/dashboard`` every few seconds; that answer is for operators only (owners of a
workspace and operator tokens, :data:`taskboard.api.deps.Operator`): a member who owns
nothing gets 403 and the page says they are not allowed.

The panels are corestone's (:mod:`corestone.web.dashboard`); taskboard adds only who
may read them. The page's files are served like the main page's (:mod:`taskboard.api.
page`): only the names in :data:`OPS_ASSETS`, strong ETags, the same strict CSP, no file
from another host (the charts are small SVGs drawn by ``charts.js``, ADR 0043).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Response

from corestone import NotFoundError
from corestone.observability.dashboard import Dashboard
from corestone.web import service
from corestone.web.contract import StrictRoute
from corestone.web.openapi import BEARER, problem_responses
from taskboard.api.deps import Operator
from taskboard.api.page import IfNoneMatch, web_file

__all__ = ["OPS_ASSETS", "api_router", "page_router"]

OPS_ASSETS: Final[dict[str, str]] = {
    "charts.js": "text/javascript; charset=utf-8",
    "ops.css": "text/css; charset=utf-8",
    "ops.js": "text/javascript; charset=utf-8",
    "panels.js": "text/javascript; charset=utf-8",
}
"""The files under ``/ops/static/`` (in the package's ``web/ops``); any other name is a 404."""

page_router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/api/ops", route_class=StrictRoute)

Panels = Annotated[Dashboard, Depends(service(Dashboard))]


@page_router.get("/ops")
async def ops_page(if_none_match: IfNoneMatch = None) -> Response:
    """The dashboard's page (no data: the script asks for it with the tab's token)."""
    return web_file("ops/index.html", "text/html; charset=utf-8", if_none_match)


@page_router.get("/ops/static/{name}")
async def ops_static(
    name: Annotated[str, Path(max_length=64)], if_none_match: IfNoneMatch = None
) -> Response:
    """One of :data:`OPS_ASSETS`; any other name is a 404 problem."""
    media_type = OPS_ASSETS.get(name)
    if media_type is None:
        raise NotFoundError("no such file")
    return web_file(f"ops/{name}", media_type, if_none_match)


@api_router.get("/dashboard", openapi_extra=BEARER, responses=problem_responses(403))
async def dashboard(_operator: Operator, panels: Panels) -> dict[str, Any]:
    """Every panel of the operations dashboard, each with its data or its own error.

    ``{"generated_at", "panels": {name: {"ok": true, "data", "age_seconds"} |
    {"ok": false, "error"}}}``: traffic (the last hour), health, breakers, cache,
    queries, backlogs, live streams. A panel whose source fails or is slow reports that,
    and the others answer as usual. Cheap to poll: each panel's cost is bounded and
    shared by every caller (docs/observability.md, "Dashboard"). For operators.
    """
    return await panels.snapshot()
