"""Request dependencies: the caller, and the services from the request scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header

from corestone import context
from corestone.errors import AuthenticationError
from corestone.web import RequestScope
from taskboard.domain.models import User
from taskboard.services import TaskService, UserService, WorkspaceService

__all__ = ["Caller", "Tasks", "Users", "Workspaces"]


async def _users(scope: RequestScope) -> UserService:
    return await scope.aget(UserService)


async def _workspaces(scope: RequestScope) -> WorkspaceService:
    return await scope.aget(WorkspaceService)


async def _tasks(scope: RequestScope) -> TaskService:
    return await scope.aget(TaskService)


Users = Annotated[UserService, Depends(_users)]
Workspaces = Annotated[WorkspaceService, Depends(_workspaces)]
Tasks = Annotated[TaskService, Depends(_tasks)]


async def _caller(
    users: Users,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> AsyncIterator[User]:
    """The authenticated user, bound as the actor of everything the request does."""
    if authorization is None:
        raise AuthenticationError("missing Authorization header; send 'Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("Authorization header must be 'Bearer <token>'")
    user = await users.authenticate(token.strip())
    with context.bind(actor=user.id):
        yield user


Caller = Annotated[User, Depends(_caller)]
