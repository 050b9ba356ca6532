"""The taskboard application: FastAPI routes on corestone's infrastructure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import svcs
from fastapi import FastAPI
from starlette.types import ASGIApp

from corestone import Infrastructure
from corestone.db import Database, upgrade
from corestone.observability import get_logger
from corestone.sagas import SagaOrchestrator, SagaRecoveryWorker
from corestone.web import instrument
from taskboard.api.ops import router as ops_router
from taskboard.api.routes import router
from taskboard.services import TaskService, UserService, WorkspaceService
from taskboard.services.workspaces import SAGAS

__all__ = ["MIGRATIONS", "add_background_work", "create_app", "prepare", "register_services"]

MIGRATIONS = "taskboard:migrations"

log = get_logger(__name__)


def register_services(infra: Infrastructure) -> SagaOrchestrator:
    """Register taskboard's application services; each is built once per request scope.

    Returns the process's saga orchestrator (also registered, as a value).
    """
    orchestrator = SagaOrchestrator(infra.db, SAGAS, metrics=infra.metrics)
    infra.services.register_value(SagaOrchestrator, orchestrator)

    def users(svcs_container: svcs.Container) -> UserService:
        return UserService(svcs_container.get(Database))

    def workspaces(svcs_container: svcs.Container) -> WorkspaceService:
        return WorkspaceService(svcs_container.get(Database), svcs_container.get(SagaOrchestrator))

    infra.services.register_factory(UserService, users)
    infra.services.register_factory(WorkspaceService, workspaces)

    signing_key = infra.settings.signing_key  # one per process unless CORESTONE_SECRET_KEY

    def tasks(svcs_container: svcs.Container) -> TaskService:
        return TaskService(svcs_container.get(Database), signing_key=signing_key)

    infra.services.register_factory(TaskService, tasks)
    return orchestrator


def add_background_work(
    infra: Infrastructure, orchestrator: SagaOrchestrator, *, interval_seconds: float = 10.0
) -> None:
    """Run taskboard's background work in this process: saga recovery (DESIGN §6)."""
    worker = SagaRecoveryWorker(orchestrator, interval_seconds=interval_seconds)
    infra.add(worker, check=worker.check, component_type="worker", critical=False)


async def prepare(infra: Infrastructure) -> None:
    """Bring the schema to the latest revision (safe with several processes at once)."""
    await upgrade(infra.db, MIGRATIONS)
    log.info("schema up to date")


def create_app(infra: Infrastructure, *, worker: bool = True) -> ASGIApp:
    """The ASGI app. If the infrastructure is not running yet, the lifespan runs it.

    ``worker=False`` leaves background work to ``taskboard worker`` processes.
    """
    orchestrator = register_services(infra)
    if worker:
        add_background_work(infra, orchestrator)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if infra.running:  # `taskboard serve` started it before binding the port
            yield
            return
        async with infra:
            await prepare(infra)
            yield

    api = FastAPI(title="taskboard", version="0.1.0", lifespan=lifespan)
    api.include_router(router)
    api.include_router(ops_router)
    return instrument(api, infra)
