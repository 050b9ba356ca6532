"""The live stream: ``GET /api/workspaces/{ws}/events``, the workspace's events as SSE.

Thin like the other routes: the caller (401 without a valid token) and the workspace,
then corestone's feed (:class:`corestone.push.EventFeed`) checks the membership (404 for
a stranger), the cap (503 with Retry-After) and the resume point before it streams.
See docs/push.md ("Live stream").
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from corestone.push import EventFeed
from corestone.web import service
from corestone.web.contract import StrictRoute
from corestone.web.openapi import BEARER, problem_responses
from taskboard.api.deps import Caller, WorkspaceId

__all__ = ["MAX_EVENT_ID_LENGTH", "router"]

router = APIRouter(prefix="/api", route_class=StrictRoute)

MAX_EVENT_ID_LENGTH = 64
"""The longest ``Last-Event-ID`` read; a longer one (never one of ours) starts over."""

Feed = Annotated[EventFeed, Depends(service(EventFeed))]

_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The workspace's events as Server-Sent Events: `retry: 2000`, then "
        "frames `id: <outbox position>`, `event: <type>`, `data: <event JSON>`; `event: "
        "reset` when the resume point is gone, `event: revoked` before the end when the "
        "caller stops being a member; a `: ping` comment at least every 15 s.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
_LAST_EVENT_ID: dict[str, Any] = {
    "parameters": [
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": "the id of the last event received: resume after it",
            "schema": {"type": "string", "maxLength": MAX_EVENT_ID_LENGTH},
        }
    ]
}


@router.get(
    "/workspaces/{ws}/events",
    response_class=Response,
    responses=_STREAM | problem_responses(503),
    openapi_extra=BEARER | _LAST_EVENT_ID,
)
async def live_events(
    request: Request,
    ws: WorkspaceId,
    caller: Caller,
    feed: Feed,
    last_event_id: Annotated[
        str | None,
        Query(
            max_length=MAX_EVENT_ID_LENGTH,
            description="as the Last-Event-ID header, for clients that cannot send one "
            "(the header wins)",
        ),
    ] = None,
) -> Response:
    header = request.headers.get("last-event-id")
    resume = header[:MAX_EVENT_ID_LENGTH] if header is not None else last_event_id
    return await feed.open(caller.id, ws, last_event_id=resume)
