"""The HTTP API of DESIGN §5 that exists so far: parse, call the service, map the result."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from corestone import context
from taskboard.api.deps import Caller, Tasks, Users, Workspaces
from taskboard.api.schemas import (
    Id,
    MemberIn,
    MemberOut,
    MeOut,
    Status,
    TaskIn,
    TaskListOut,
    TaskOut,
    UserIn,
    UserOut,
    UserWithTokenOut,
    WorkspaceIn,
    WorkspaceOut,
)
from taskboard.domain.models import Role, Task, TaskStatus
from taskboard.services.tasks import MAX_LIMIT

__all__ = ["router"]

router = APIRouter(prefix="/api")

WorkspaceId = Annotated[int, Path(gt=0, lt=2**63)]
TaskId = Annotated[int, Path(gt=0, lt=2**63)]


@router.post("/users", status_code=201)
async def create_user(body: UserIn, users: Users) -> UserWithTokenOut:
    user, token = await users.create(name=body.name, email=str(body.email).lower())
    return UserWithTokenOut(user=UserOut(id=user.id, name=user.name, email=user.email), token=token)


@router.get("/me")
async def me(caller: Caller, users: Users) -> MeOut:
    found = await users.me(caller)
    return MeOut(
        user=UserOut(id=caller.id, name=caller.name, email=caller.email),
        workspaces=[
            WorkspaceOut(id=ws.id, name=ws.name, role=role, created_at=ws.created_at)  # type: ignore[arg-type]
            for ws, role in found.workspaces
        ],
    )


@router.post("/workspaces", status_code=201)
async def create_workspace(
    body: WorkspaceIn, caller: Caller, workspaces: Workspaces
) -> WorkspaceOut:
    workspace = await workspaces.create(caller, name=body.name)
    return WorkspaceOut(
        id=workspace.id, name=workspace.name, role="owner", created_at=workspace.created_at
    )


@router.post("/workspaces/{ws}/members", status_code=201)
async def add_member(
    ws: WorkspaceId, body: MemberIn, caller: Caller, workspaces: Workspaces
) -> MemberOut:
    with context.bind(workspace=ws):
        membership = await workspaces.add_member(
            caller, ws, user_id=body.user_id, role=Role(body.role)
        )
    return MemberOut(workspace_id=ws, user_id=membership.user_id, role=body.role)


@router.post("/workspaces/{ws}/tasks", status_code=201)
async def create_task(
    ws: WorkspaceId, body: TaskIn, caller: Caller, tasks: Tasks, response: Response
) -> TaskOut:
    with context.bind(workspace=ws):
        task = await tasks.create(
            caller,
            ws,
            title=body.title,
            description=body.description,
            status=TaskStatus(body.status),
            assignee_id=body.assignee_id,
        )
    response.headers["ETag"] = f'"{task.version}"'
    response.headers["Location"] = f"/api/workspaces/{ws}/tasks/{task.id}"
    return _task_out(task)


@router.get("/workspaces/{ws}/tasks")
async def list_tasks(
    ws: WorkspaceId,
    caller: Caller,
    tasks: Tasks,
    status: Status | None = None,
    assignee_id: Annotated[Id | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> TaskListOut:
    with context.bind(workspace=ws):
        page = await tasks.list(
            caller,
            ws,
            status=TaskStatus(status) if status else None,
            assignee_id=assignee_id,
            limit=limit,
            cursor=cursor,
        )
    return TaskListOut(items=[_task_out(t) for t in page.items], next_cursor=page.next_cursor)


@router.get("/workspaces/{ws}/tasks/{task_id}")
async def get_task(
    ws: WorkspaceId, task_id: TaskId, caller: Caller, tasks: Tasks, response: Response
) -> TaskOut:
    with context.bind(workspace=ws):
        task = await tasks.get(caller, ws, task_id)
    response.headers["ETag"] = f'"{task.version}"'
    return _task_out(task)


def _task_out(task: Task) -> TaskOut:
    return TaskOut.model_validate(task, from_attributes=True)
