"""Tasks inside a workspace: create, read, list with keyset pagination.

Every query is scoped by the workspace and checked against the caller's membership
first, so another workspace's task ids answer NotFoundError, never data.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import orjson
from sqlalchemy import select

from corestone import InvalidInputError, NotFoundError
from corestone.db import Database
from taskboard.domain.models import Membership, Task, TaskStatus, User
from taskboard.services.workspaces import require_member

__all__ = ["TaskPage", "TaskService", "decode_cursor", "encode_cursor"]

MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class TaskPage:
    items: list[Task]
    next_cursor: str | None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": last_id})).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor continues after, or InvalidInputError naming ``cursor``."""
    try:
        if len(cursor) > 200:
            raise ValueError("too long")
        payload = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after = payload["after"]
        if type(after) is not int or not 0 < after < 2**63 or set(payload) != {"after"}:
            raise ValueError("bad position")
    except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidInputError(
            "not a cursor this API issued", field="cursor", rule="cursor"
        ) from None
    return after


class TaskService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        actor: User,
        workspace_id: int,
        *,
        title: str,
        description: str = "",
        status: TaskStatus = TaskStatus.OPEN,
        assignee_id: int | None = None,
    ) -> Task:
        async with self._db.transaction() as tx:
            session = tx.session
            await require_member(session, workspace_id, actor.id)
            if (
                assignee_id is not None
                and await session.get(Membership, (workspace_id, assignee_id)) is None
            ):
                raise InvalidInputError(
                    "the assignee is not a member of this workspace",
                    field="assignee_id",
                    rule="member",
                )
            task = Task(
                workspace_id=workspace_id,
                title=title,
                description=description,
                status=status.value,
                assignee_id=assignee_id,
                version=1,
            )
            session.add(task)
            await session.flush()
            await session.refresh(task)
        return task

    async def get(self, actor: User, workspace_id: int, task_id: int) -> Task:
        async with self._db.transaction(read_only=True) as tx:
            session = tx.session
            await require_member(session, workspace_id, actor.id)
            task = await session.scalar(
                select(Task).where(Task.workspace_id == workspace_id, Task.id == task_id)
            )
            if task is None:
                raise NotFoundError("task not found")
            return task

    async def list(
        self,
        actor: User,
        workspace_id: int,
        *,
        status: TaskStatus | None = None,
        assignee_id: int | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInputError(
                f"must be between 1 and {MAX_LIMIT}", field="limit", rule="range"
            )
        after = decode_cursor(cursor) if cursor else 0
        async with self._db.transaction(read_only=True) as tx:
            session = tx.session
            await require_member(session, workspace_id, actor.id)
            query = select(Task).where(Task.workspace_id == workspace_id, Task.id > after)
            if status is not None:
                query = query.where(Task.status == status.value)
            if assignee_id is not None:
                query = query.where(Task.assignee_id == assignee_id)
            rows = list(await session.scalars(query.order_by(Task.id).limit(limit + 1)))
        more = len(rows) > limit
        items = rows[:limit]
        return TaskPage(items, encode_cursor(items[-1].id) if more else None)
