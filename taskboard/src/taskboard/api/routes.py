"""The HTTP API of docs/taskboard.md: parse, call the service, map the result."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from corestone import InvalidInputError, StaleVersionError
from corestone.db import MAX_CURSOR_LENGTH
from corestone.web import problem_for_error
from corestone.web.contract import (
    ANY_VERSION,
    PreconditionFailedError,
    StrictRoute,
    field_value,
    if_match_version,
)
from corestone.web.openapi import BEARER, problem_responses, required_header
from taskboard.api.deps import Caller, Tasks, Users, WorkspaceId, Workspaces
from taskboard.api.schemas import (
    DIGITS,
    AuditEntryOut,
    AuditListOut,
    Id,
    MemberIn,
    MemberOut,
    MeOut,
    Status,
    TaskBulkIn,
    TaskBulkOut,
    TaskIn,
    TaskListOut,
    TaskOut,
    TaskPageOut,
    TaskPatch,
    UserIn,
    UserOut,
    UserWithTokenOut,
    WorkspaceIn,
    WorkspaceOut,
)
from taskboard.domain.models import Role, Task
from taskboard.services import TaskQuery
from taskboard.services.repositories import MAX_LIMIT, TaskRepository

__all__ = ["IF_MATCH_PATTERN", "SORT_PATTERN", "router"]

router = APIRouter(prefix="/api", route_class=StrictRoute)

TaskId = Annotated[int, Path(gt=0, lt=2**63)]

_ETAG_HEADER = {
    "ETag": {
        "description": 'the version, as "<version>"',
        "required": True,
        "schema": {"type": "string", "pattern": '^"[1-9][0-9]*"$'},
    }
}
_TASK = "/api/workspaces/{ws}/tasks/{task_id}"


def _ref(path: str, method: str) -> str:
    """The operationRef of ``method path`` (a JSON pointer into this document)."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def _links(task: dict[str, str], *, read: bool) -> dict[str, Any]:
    """OpenAPI links from a response naming one task to what a client does with it next.

    ``task`` says where the response names the task (its body, or the request's path); a
    response that carries the task (``read``) also carries its ETag, which PATCH, DELETE
    and restore send back as If-Match, so a client (or schemathesis's stateful phase)
    follows real versions.
    """
    written = task | {"header.If-Match": "$response.header.ETag"} if read else task
    links: dict[str, Any] = {
        "GetTask": {"operationRef": _ref(_TASK, "get"), "parameters": task},
        "DeleteTask": {"operationRef": _ref(_TASK, "delete"), "parameters": written},
        "RestoreTask": {"operationRef": _ref(_TASK + "/restore", "post"), "parameters": written},
    }
    if read:
        links["UpdateTask"] = {"operationRef": _ref(_TASK, "patch"), "parameters": written}
    return links


_FROM_BODY = {"path.ws": "$response.body#/workspace_id", "path.task_id": "$response.body#/id"}
_FROM_PATH = {"path.ws": "$request.path.ws", "path.task_id": "$request.path.task_id"}
_WITH_ETAG: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The task",
        "headers": _ETAG_HEADER,
        "links": _links(_FROM_BODY, read=True),
    }
}
_CREATED_TASK: dict[int | str, dict[str, Any]] = {
    201: {
        "description": "The task created",
        "headers": _ETAG_HEADER | {"Location": {"required": True, "schema": {"type": "string"}}},
        "links": _links(_FROM_BODY, read=True),
    }
}
_DELETED: dict[int | str, dict[str, Any]] = {
    204: {"description": "Deleted (restorable)", "links": _links(_FROM_PATH, read=False)}
}
# RFC 9110 §13.1.1: "*" or a list of entity-tags, as corestone's if_match_version reads it
# (anything else is its 422). Whether a tag matches is the task's state, not syntax: a
# weak, stale or non-version tag is a 412.
_ETAG = r'(?:W/)?"[!#-~\u0080-\u00ff]*"'
IF_MATCH_PATTERN = rf"^\s*(?:\*|{_ETAG}(?:\s*,\s*{_ETAG})*\s*,?)\s*$"
# The sort terms corestone.db.parse_sort accepts: sortable names, - for descending, spaces
# around a term stripped. A name given twice is a 422 too, which the description says.
_SORT_NAME = rf"\s*-?(?:{'|'.join(TaskRepository.sortable)})\s*"
SORT_PATTERN = rf"^{_SORT_NAME}(?:,{_SORT_NAME}){{0,{len(TaskRepository.sortable) - 1}}}$"
_IF_MATCH_MAX = 100
_IF_MATCH = required_header(
    "If-Match",
    'The ETag of the task read ("3"), or * for any version; compared strongly (ADR 0029): '
    "a stale version is 412 with current_version, absent is 428, and a list naming two "
    "versions is 422.",
    max_length=_IF_MATCH_MAX,
    pattern=IF_MATCH_PATTERN,
)


async def _if_match(request: Request) -> str | None:
    """If-Match as one list, however many lines it was sent on (RFC 9110 §5.3)."""
    value = field_value(request.headers, "if-match")
    if value is not None and len(value) > _IF_MATCH_MAX:
        raise InvalidInputError(
            f"If-Match must be at most {_IF_MATCH_MAX} characters",
            field="If-Match",
            rule="max_length",
        )
    return value


IfMatch = Annotated[str | None, Depends(_if_match)]
_OPTIONAL_IF_MATCH: dict[str, Any] = {
    "parameters": [
        {
            "name": "If-Match",
            "in": "header",
            "required": False,
            "description": 'The ETag of the task read ("3"), or * for any version; compared '
            "strongly (ADR 0029): a stale version is 412 with current_version. Without it "
            "the write applies to whatever version is current.",
            "schema": {"type": "string", "maxLength": _IF_MATCH_MAX, "pattern": IF_MATCH_PATTERN},
        }
    ]
}


@router.post("/users", status_code=201, responses=problem_responses(409))
async def create_user(body: UserIn, users: Users) -> UserWithTokenOut:
    user, token = await users.create(name=body.name, email=str(body.email))
    return UserWithTokenOut(user=UserOut(id=user.id, name=user.name, email=user.email), token=token)


@router.get("/me", openapi_extra=BEARER)
async def me(caller: Caller, users: Users) -> MeOut:
    found = await users.me(caller)
    return MeOut(
        user=UserOut(id=caller.id, name=caller.name, email=caller.email),
        workspaces=[
            WorkspaceOut(id=ws.id, name=ws.name, role=role, created_at=ws.created_at)  # type: ignore[arg-type]
            for ws, role in found.workspaces
        ],
    )


@router.post("/workspaces", status_code=201, openapi_extra=BEARER)
async def create_workspace(
    body: WorkspaceIn, caller: Caller, workspaces: Workspaces
) -> WorkspaceOut:
    workspace = await workspaces.create(caller, name=body.name)
    return WorkspaceOut(
        id=workspace.id, name=workspace.name, role="owner", created_at=workspace.created_at
    )


@router.post(
    "/workspaces/{ws}/members",
    status_code=201,
    responses=problem_responses(403, 409),
    openapi_extra=BEARER,
)
async def add_member(
    ws: WorkspaceId, body: MemberIn, caller: Caller, workspaces: Workspaces
) -> MemberOut:
    membership = await workspaces.add_member(caller, ws, user_id=body.user_id, role=Role(body.role))
    return MemberOut(workspace_id=ws, user_id=membership.user_id, role=body.role)


@router.post(
    "/workspaces/{ws}/tasks",
    status_code=201,
    response_model=TaskOut,
    responses=_CREATED_TASK,
    openapi_extra=BEARER,
)
async def create_task(ws: WorkspaceId, body: TaskIn, caller: Caller, tasks: Tasks) -> Response:
    task = await tasks.create(caller, ws, body.model_dump())
    return _task_response(task, 201, location=f"/api/workspaces/{ws}/tasks/{task.id}")


@router.post(
    "/workspaces/{ws}/tasks/bulk", status_code=201, response_model=TaskBulkOut, openapi_extra=BEARER
)
async def create_tasks(ws: WorkspaceId, body: TaskBulkIn, caller: Caller, tasks: Tasks) -> Response:
    created = await tasks.create_many(caller, ws, [item.model_dump() for item in body.items])
    return _json({"items": [_task_json(task) for task in created]}, 201)


@router.get(
    "/workspaces/{ws}/tasks", response_model=TaskListOut | TaskPageOut, openapi_extra=BEARER
)
async def list_tasks(
    ws: WorkspaceId,
    caller: Caller,
    tasks: Tasks,
    status: Annotated[Status | None, Query(description="only tasks in this status")] = None,
    assignee_id: Annotated[
        Id | None, Query(description="only tasks assigned to this user"), DIGITS
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="text in the title or description; case folded for ASCII letters "
            "only; % and _ are plain characters",
        ),
    ] = None,
    sort: Annotated[
        str | None,
        Query(
            max_length=200,
            description="comma-separated among id, created_at, updated_at, title, status; "
            "- for descending; each at most once (422)",
            json_schema_extra={"pattern": SORT_PATTERN},
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size"), DIGITS] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_LENGTH,
            description="next_cursor of the previous page, with the same filters and sort; "
            "not with page (422)",
        ),
    ] = None,
    page: Annotated[
        int | None,
        Query(
            ge=1,
            le=1_000_000,
            description="page mode: this page of limit tasks, with the total; not with "
            "cursor (422)",
        ),
        DIGITS,
    ] = None,
) -> Response:
    query = TaskQuery(status=status, assignee_id=assignee_id, text=q, sort=sort)
    listing = await tasks.list(caller, ws, query, limit=limit, cursor=cursor, page=page)
    items = [_task_json(task) for task in listing.items]
    if listing.total is not None and listing.page is not None:
        return _json(
            {"items": items, "next_cursor": None, "total": listing.total, "page": listing.page}
        )
    return _json({"items": items, "next_cursor": listing.next_cursor})


@router.get(
    "/workspaces/{ws}/tasks/{task_id:int64}",
    response_model=TaskOut,
    responses=_WITH_ETAG,
    openapi_extra=BEARER,
)
async def get_task(ws: WorkspaceId, task_id: TaskId, caller: Caller, tasks: Tasks) -> Response:
    return _task_response(await tasks.get(caller, ws, task_id))


@router.patch(
    "/workspaces/{ws}/tasks/{task_id:int64}",
    response_model=TaskOut,
    responses=_WITH_ETAG | problem_responses(412, 428),
    openapi_extra=BEARER | _IF_MATCH,
)
async def update_task(
    request: Request,
    ws: WorkspaceId,
    task_id: TaskId,
    body: TaskPatch,
    caller: Caller,
    tasks: Tasks,
    if_match: IfMatch,
) -> Response:
    expected, unmatchable = _condition(if_match, required=True)
    try:
        task = await tasks.update(caller, ws, task_id, body.changes(), expected_version=expected)
    except StaleVersionError as stale:  # the If-Match precondition failed (ADR 0029)
        return problem_for_error(unmatchable or stale, instance=request.url.path, status=412)
    return _task_response(task)


@router.delete(
    "/workspaces/{ws}/tasks/{task_id:int64}",
    status_code=204,
    response_class=Response,
    responses=_DELETED | problem_responses(412),
    openapi_extra=BEARER | _OPTIONAL_IF_MATCH,
)
async def delete_task(
    request: Request,
    ws: WorkspaceId,
    task_id: TaskId,
    caller: Caller,
    tasks: Tasks,
    if_match: IfMatch,
) -> Response:
    expected, unmatchable = _condition(if_match, required=False)
    try:
        await tasks.delete(caller, ws, task_id, expected_version=expected)
    except StaleVersionError as stale:  # the If-Match precondition failed (ADR 0029)
        return problem_for_error(unmatchable or stale, instance=request.url.path, status=412)
    return Response(status_code=204)  # no body, so no Content-Type either


@router.post(
    "/workspaces/{ws}/tasks/{task_id:int64}/restore",
    response_model=TaskOut,
    responses=_WITH_ETAG | problem_responses(412),
    openapi_extra=BEARER | _OPTIONAL_IF_MATCH,
)
async def restore_task(
    request: Request,
    ws: WorkspaceId,
    task_id: TaskId,
    caller: Caller,
    tasks: Tasks,
    if_match: IfMatch,
) -> Response:
    expected, unmatchable = _condition(if_match, required=False)
    try:
        task = await tasks.restore(caller, ws, task_id, expected_version=expected)
    except StaleVersionError as stale:
        return problem_for_error(unmatchable or stale, instance=request.url.path, status=412)
    return _task_response(task)


_NO_VERSION = 0
"""A version no task is ever at (they start at 1): the condition of a tag that can match none."""


def _condition(
    value: str | None, *, required: bool
) -> tuple[int | None, PreconditionFailedError | None]:
    """The version a write expects, and the 412 to answer if it is not the task's.

    PATCH requires If-Match (428 without); on DELETE and restore none is no condition
    (ADR 0029). A weak or non-version tag matches no version, but its 412 waits for the
    write: RFC 9110 §13.2.1 ignores preconditions on a request that fails without them,
    so a missing task, or one in a workspace the caller is no member of, stays a 404.
    The write expects :data:`_NO_VERSION` and so fails stale on a task that is there.
    """
    if value is None and not required:
        return ANY_VERSION, None
    try:
        return if_match_version(value), None
    except PreconditionFailedError as unmatchable:
        return _NO_VERSION, unmatchable


@router.get("/workspaces/{ws}/audit", openapi_extra=BEARER)
async def audit_log(
    ws: WorkspaceId,
    caller: Caller,
    tasks: Tasks,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size"), DIGITS] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_LENGTH, description="next_cursor of the previous page"),
    ] = None,
) -> AuditListOut:
    found = await tasks.audit(caller, ws, limit=limit, cursor=cursor)
    return AuditListOut(
        items=[
            AuditEntryOut(
                id=e.id,
                action=e.action,
                entity=e.entity,
                entity_id=int(e.entity_id),
                actor_id=_int_id(e.actor_id),
                changes=e.changes,
                correlation_id=e.correlation_id,
                at=e.at,
            )
            for e in found.items
        ],
        next_cursor=found.next_cursor,
    )


def _int_id(stored: str | None) -> int | None:
    """An audit id column holds text (any entity's key); taskboard's keys are integers."""
    return int(stored) if stored is not None and stored.isdigit() else None


def _task_json(task: Task) -> dict[str, object]:
    """The ``TaskOut`` shape of a task the service just built: no validation pass.

    The row is typed and checked by the database and the service, so validating it
    again into a pydantic model only to serialise it would cost, per request, more than
    the cached read it answers (docs/performance.md, "Per-request overhead").
    """
    return {
        "id": task.id,
        "workspace_id": task.workspace_id,
        "title": task.title,
        "description": task.description,
        "status": task.status,
        "assignee_id": task.assignee_id,
        "version": task.version,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
    }


def _task_response(task: Task, status: int = 200, *, location: str | None = None) -> Response:
    """One task, its version as the ETag (and its ``Location`` when just created)."""
    response = _json(_task_json(task), status)
    response.headers["ETag"] = f'"{task.version}"'
    if location is not None:
        response.headers["Location"] = location
    return response


def _json(body: object, status: int = 200) -> Response:
    """``body`` serialised once, by orjson, in pydantic's format (UTC as ``Z``)."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_UTC_Z),
        status_code=status,
        media_type="application/json",
    )
