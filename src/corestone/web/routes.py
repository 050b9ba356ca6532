"""The operational endpoints: ``/health/live``, ``/health/ready`` and ``/metrics``."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from corestone.observability.health import HealthRegistry, HealthReport
from corestone.observability.metrics import Metrics

__all__ = ["HEALTH_CONTENT_TYPE", "operations_router"]

HEALTH_CONTENT_TYPE = "application/health+json"


def operations_router(health: HealthRegistry, metrics: Metrics) -> APIRouter:
    """Routes for liveness, readiness and Prometheus scraping, left out of the OpenAPI schema."""
    router = APIRouter(include_in_schema=False)

    @router.get("/health/live")
    async def live() -> Response:
        return _health_response(await health.live())

    @router.get("/health/ready")
    async def ready() -> Response:
        return _health_response(await health.ready())

    @router.get("/metrics")
    async def scrape() -> Response:
        await metrics.refresh()  # scrape-time values that need I/O (database statistics)
        return Response(metrics.render(), media_type=metrics.content_type)

    return router


def _health_response(report: HealthReport) -> Response:
    return Response(
        orjson.dumps(report.as_json()),
        status_code=report.http_status,
        media_type=HEALTH_CONTENT_TYPE,
        headers={"Cache-Control": "no-store"},
    )
