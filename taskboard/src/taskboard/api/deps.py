"""Request dependencies: the caller, the workspace in the path, and the request's services.

Each is one plain ``async def``: FastAPI solves a dependency tree node by node, and a
generator dependency costs an exit stack and a shielded context manager besides, so a
cached read paid more for its dependencies than for its data (docs/performance.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request

from corestone import PermissionDeniedError
from corestone.context import bind_to_request
from corestone.web import bearer_token, service
from taskboard.api.schemas import DIGITS
from taskboard.domain.models import User
from taskboard.services import TaskService, UserService, WorkspaceService

__all__ = ["Caller", "Operator", "OperatorToken", "Tasks", "Users", "WorkspaceId", "Workspaces"]

Users = Annotated[UserService, Depends(service(UserService))]
Workspaces = Annotated[WorkspaceService, Depends(service(WorkspaceService))]
Tasks = Annotated[TaskService, Depends(service(TaskService))]

_users = service(UserService)


async def _caller(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> User:
    """The authenticated user, bound as the actor of everything the request does.

    Read through the principal cache: a known token costs no query once cached.
    """
    users = await _users(request)
    user = await users.authenticate(await bearer_token(authorization))
    bind_to_request(actor=user.id)
    return user


Caller = Annotated[User, Depends(_caller)]


async def _operator(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> User:
    """The authenticated user, if they may read operations data; else 403 (anonymous: 401).

    Operations data (breakers, cache counters, slow statements, health, alerts) describes
    the whole service, not one workspace: owners of any workspace and operator tokens
    may read it; a member who owns nothing may not.
    """
    token = await bearer_token(authorization)
    users = await _users(request)
    user = await users.authenticate(token)
    bind_to_request(actor=user.id)
    if not await users.may_operate(user, token):
        raise PermissionDeniedError(
            "operations data is for owners of a workspace and operator tokens"
        )
    return user


Operator = Annotated[User, Depends(_operator)]


async def _operator_token(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> User:
    """The authenticated user, if they call with an operator token; else 403 (anonymous: 401).

    For what changes the whole service, such as muting its alerts: anyone may sign up and
    own a workspace, so ownership lets a user read operations data, never silence an
    alert for everyone. Only ``taskboard token create --operator`` grants that.
    """
    token = await bearer_token(authorization)
    users = await _users(request)
    user = await users.authenticate(token)
    bind_to_request(actor=user.id)
    if not await users.holds_operator_token(user, token):
        raise PermissionDeniedError("changing alerts needs an operator token")
    return user


OperatorToken = Annotated[User, Depends(_operator_token)]


async def _workspace(ws: Annotated[int, Path(gt=0, lt=2**63), DIGITS]) -> int:
    """The workspace in the path, bound as the tenant of everything the request does.

    Membership is not checked here: every service method checks it (through the
    membership cache), so a use case is safe whoever calls it.
    """
    bind_to_request(workspace=ws)
    return ws


WorkspaceId = Annotated[int, Depends(_workspace)]
