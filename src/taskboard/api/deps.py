"""Request dependencies: the caller, the workspace in the path, and the request's services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path

from corestone.context import bind
from corestone.web import BearerToken, RequestScope
from taskboard.domain.models import User
from taskboard.services import TaskService, UserService, WorkspaceService

__all__ = ["Caller", "Tasks", "Users", "WorkspaceId", "Workspaces"]


async def _users(scope: RequestScope) -> UserService:
    return await scope.aget(UserService)


async def _workspaces(scope: RequestScope) -> WorkspaceService:
    return await scope.aget(WorkspaceService)


async def _tasks(scope: RequestScope) -> TaskService:
    return await scope.aget(TaskService)


Users = Annotated[UserService, Depends(_users)]
Workspaces = Annotated[WorkspaceService, Depends(_workspaces)]
Tasks = Annotated[TaskService, Depends(_tasks)]


async def _caller(token: BearerToken, users: Users) -> AsyncIterator[User]:
    """The authenticated user, bound as the actor of everything the request does.

    Read through the principal cache: a known token costs no query once cached.
    """
    user = await users.authenticate(token)
    with bind(actor=user.id):
        yield user


Caller = Annotated[User, Depends(_caller)]


async def _workspace(ws: Annotated[int, Path(gt=0, lt=2**63)]) -> AsyncIterator[int]:
    """The workspace in the path, bound as the tenant of everything the request does.

    Membership is not checked here: every service method checks it (through the
    membership cache), so a use case is safe whoever calls it.
    """
    with bind(workspace=ws):
        yield ws


WorkspaceId = Annotated[int, Depends(_workspace)]
