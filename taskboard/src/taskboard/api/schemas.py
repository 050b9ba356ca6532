"""Request and response bodies. Requests are strict: no coercion, no unknown fields."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)

from taskboard.domain.models import DESCRIPTION_MAX, NAME_MAX, TITLE_MAX

__all__ = [
    "BULK_MAX",
    "AuditEntryOut",
    "AuditListOut",
    "Id",
    "MeOut",
    "MemberIn",
    "MemberOut",
    "TaskBulkIn",
    "TaskBulkOut",
    "TaskIn",
    "TaskListOut",
    "TaskOut",
    "TaskPageOut",
    "TaskPatch",
    "UserIn",
    "UserOut",
    "UserWithTokenOut",
    "WorkspaceIn",
    "WorkspaceOut",
]

# Positive and within BIGINT, so no id ever overflows a database column.
Id = Annotated[int, Field(gt=0, lt=2**63)]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_NEWLINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _single_line(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters or line breaks")
    return value


def _text(value: str) -> str:
    if _CONTROL_EXCEPT_NEWLINES.search(value):
        raise ValueError("must not contain control characters")
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX),
    AfterValidator(_single_line),
]
Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TITLE_MAX),
    AfterValidator(_single_line),
]
Description = Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX), AfterValidator(_text)]
Status = Literal["open", "in_progress", "done"]


class _Input(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class UserIn(_Input):
    name: Name
    email: Annotated[EmailStr, StringConstraints(max_length=254)]


class WorkspaceIn(_Input):
    name: Name


class MemberIn(_Input):
    user_id: Id
    role: Literal["owner", "member"] = "member"


class TaskIn(_Input):
    title: Title
    description: Description = ""
    status: Status = "open"
    assignee_id: Id | None = None


def _no_defaults(schema: dict[str, Any]) -> None:
    """An absent PATCH field is left alone: no default is ever applied, so none is shown."""
    for field in schema.get("properties", {}).values():
        field.pop("default", None)


class TaskPatch(_Input):
    """A partial update: only the fields sent change; ``assignee_id: null`` unassigns.

    ``title``, ``description`` and ``status`` are not nullable: their ``None`` default only
    marks them absent (it is never validated), so a ``null`` sent is refused naming the
    field, and the schema shows them as plain strings.
    """

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra=_no_defaults)

    title: Title = None  # type: ignore[assignment]
    description: Description = None  # type: ignore[assignment]
    status: Status = None  # type: ignore[assignment]
    assignee_id: Id | None = None

    def changes(self) -> dict[str, object]:
        """The fields the client sent, and only those."""
        return self.model_dump(exclude_unset=True)


# One transaction holds the whole batch; a bound keeps it short and the body small.
BULK_MAX = 500


class TaskBulkIn(_Input):
    items: Annotated[list[TaskIn], Field(min_length=1, max_length=BULK_MAX)]


class UserOut(BaseModel):
    id: int
    name: str
    email: str


class UserWithTokenOut(BaseModel):
    user: UserOut
    token: str


class WorkspaceOut(BaseModel):
    id: int
    name: str
    role: Literal["owner", "member"] | None = None
    created_at: datetime


class MemberOut(BaseModel):
    workspace_id: int
    user_id: int
    role: Literal["owner", "member"]


class MeOut(BaseModel):
    user: UserOut
    workspaces: list[WorkspaceOut]


class TaskOut(BaseModel):
    id: int
    workspace_id: int
    title: str
    description: str
    status: Status
    assignee_id: int | None
    version: int
    created_at: datetime
    updated_at: datetime


class TaskListOut(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class TaskPageOut(TaskListOut):
    """Page mode (``?page=``): the page plus the total count of matching tasks."""

    total: int
    page: int


class TaskBulkOut(BaseModel):
    items: list[TaskOut]


class AuditEntryOut(BaseModel):
    id: int
    action: str
    entity: str
    entity_id: int
    actor_id: int | None
    changes: dict[str, object]
    correlation_id: str | None
    at: datetime


class AuditListOut(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None
