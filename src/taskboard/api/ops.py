"""Operations data behind the dashboard (DESIGN §5): ``GET /api/ops/breakers``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from corestone.web import infrastructure
from taskboard.api.deps import Caller

__all__ = ["router"]

router = APIRouter(prefix="/api/ops")


@router.get("/breakers")
async def breakers(request: Request, _caller: Caller) -> dict[str, Any]:
    """Every circuit breaker of this process: state, rates, counters, when it retries.

    Any signed-in user may read it: it names dependencies and their health, nothing of a
    workspace's data.
    """
    return infrastructure(request).breakers.as_json()
