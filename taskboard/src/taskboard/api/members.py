"""Removing a member: ``DELETE /api/workspaces/{ws}/members/{user_id}`` (owner only).

Kept beside ``routes.py`` (adding a member lives there) so that module stays small.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from corestone.web.contract import StrictRoute
from corestone.web.openapi import BEARER, problem_responses
from taskboard.api.deps import Caller, WorkspaceId, Workspaces

__all__ = ["router"]

router = APIRouter(prefix="/api", route_class=StrictRoute)

_REMOVED: dict[int | str, dict[str, Any]] = {204: {"description": "Removed"}}
UserId = Annotated[int, Path(gt=0, lt=2**63)]


@router.delete(
    "/workspaces/{ws}/members/{user_id:int64}",
    status_code=204,
    response_class=Response,
    responses=_REMOVED | problem_responses(403, 409),
    openapi_extra=BEARER,
)
async def remove_member(
    ws: WorkspaceId, user_id: UserId, caller: Caller, workspaces: Workspaces
) -> Response:
    """Remove ``user_id`` from the workspace: owners only; the last owner stays (409).

    The removed user's live streams of the workspace end (``event: revoked``).
    """
    await workspaces.remove_member(caller, ws, user_id=user_id)
    return Response(status_code=204)
