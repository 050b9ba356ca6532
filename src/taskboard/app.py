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
from corestone.web import instrument
from taskboard.api.routes import router
from taskboard.services import TaskService, UserService, WorkspaceService

__all__ = ["MIGRATIONS", "create_app", "prepare", "register_services"]

MIGRATIONS = "taskboard:migrations"

log = get_logger(__name__)


def register_services(infra: Infrastructure) -> None:
    """Register taskboard's application services; each is built once per request scope."""

    def from_db(service: type[UserService | WorkspaceService]):  # type: ignore[no-untyped-def]
        def factory(svcs_container: svcs.Container) -> object:
            return service(svcs_container.get(Database))

        return factory

    for service in (UserService, WorkspaceService):
        infra.services.register_factory(service, from_db(service))

    signing_key = infra.settings.signing_key  # one per process unless CORESTONE_SECRET_KEY

    def tasks(svcs_container: svcs.Container) -> TaskService:
        return TaskService(svcs_container.get(Database), signing_key=signing_key)

    infra.services.register_factory(TaskService, tasks)


async def prepare(infra: Infrastructure) -> None:
    """Bring the schema to the latest revision (safe with several processes at once)."""
    await upgrade(infra.db, MIGRATIONS)
    log.info("schema up to date")


def create_app(infra: Infrastructure) -> ASGIApp:
    """The ASGI app. If the infrastructure is not running yet, the lifespan runs it."""
    register_services(infra)

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
    return instrument(api, infra)
