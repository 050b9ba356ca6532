"""Operations data for the dashboard (docs/taskboard.md): ``/api/ops/breakers``, ``/cache``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from corestone.web import infrastructure
from corestone.web.contract import StrictRoute
from corestone.web.openapi import BEARER
from taskboard.api.deps import Caller

__all__ = ["router"]

router = APIRouter(prefix="/api/ops", route_class=StrictRoute)


@router.get("/breakers", openapi_extra=BEARER)
async def breakers(request: Request, _caller: Caller) -> dict[str, Any]:
    """Every circuit breaker of this process: state, rates, counters, when it retries.

    Any signed-in user may read it: it names dependencies and their health, nothing of a
    workspace's data.
    """
    return infrastructure(request).breakers.as_json()


@router.get("/cache", openapi_extra=BEARER)
async def cache(request: Request, _caller: Caller) -> dict[str, Any]:
    """The cache of this process: hits and misses per tier, L1 size, Redis and backplane.

    Counters only, never keys or values: a key names a workspace's data.
    """
    return infrastructure(request).cache.snapshot()
