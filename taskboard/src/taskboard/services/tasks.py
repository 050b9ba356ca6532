"""Tasks inside a workspace, on corestone's repository: list, create, bulk, update, delete.

Every method first checks the caller's membership (a non-member gets NotFoundError, never a
hint that the workspace exists); everything after that goes through ``TaskRepository``,
which scopes reads and checks writes by the workspace, hides soft-deleted tasks, bumps the
version, and writes the audit log in the same transaction. Each write records its domain
events (``taskboard.events``) in that transaction too: the assignment email is a
consumer of ``task.assigned``, not a call made here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from corestone import InvalidInputError
from corestone.db import AuditEntry, CursorCodec, Database, Transaction, audit_entries, check_limit
from corestone.db.scoping import INCLUDE_DELETED_OPTION, WORKSPACE_OPTION
from corestone.events import EventPayload
from taskboard.domain.models import Task, User
from taskboard.events import (
    TaskAssigned,
    TaskCreated,
    TaskDeleted,
    TaskRestored,
    TaskUpdated,
    record_task_events,
)
from taskboard.services.repositories import (
    MAX_LIMIT,
    MembershipRepository,
    TaskRepository,
    UncachedTaskRepository,
)
from taskboard.services.workspaces import require_member

__all__ = ["AuditPage", "TaskListing", "TaskQuery", "TaskService"]


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """What a task list asks for, in the API's terms; ``filters`` is the repository's grammar.

    ``text`` matches title or description (case-insensitively; ``%`` and ``_`` are plain
    characters). ``sort`` is the repository's sort string (``-`` for descending).
    """

    status: str | None = None
    assignee_id: int | None = None
    text: str | None = None
    sort: str | None = None

    def filters(self) -> dict[str, Any]:
        filters: dict[str, Any] = {}
        if self.status is not None:
            filters["status"] = self.status
        if self.assignee_id is not None:
            filters["assignee_id"] = self.assignee_id
        if self.text is not None:
            filters["or"] = [
                {"title": {"contains": self.text}},
                {"description": {"contains": self.text}},
            ]
        return filters


@dataclass(frozen=True, slots=True)
class TaskListing:
    """A list response: keyset mode has ``next_cursor``; page mode has ``total`` and ``page``."""

    items: list[Task]
    next_cursor: str | None = None
    total: int | None = None
    page: int | None = None


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[AuditEntry]
    next_cursor: str | None


class TaskService:
    def __init__(
        self,
        db: Database,
        *,
        signing_key: bytes,
        cache_reads: bool = True,
    ) -> None:
        self._db = db
        self._signing_key = signing_key
        self._audit_cursors = CursorCodec(signing_key)
        # Off (TASKBOARD_TASK_CACHE=off): reads go to the database; writes still
        # invalidate, so switching it back on never serves a stale row.
        self._cache_reads = cache_reads
        self._repository = TaskRepository if cache_reads else UncachedTaskRepository

    def _tasks(self, tx: Transaction, workspace_id: int) -> TaskRepository:
        return self._repository(tx, signing_key=self._signing_key, workspace=workspace_id)

    async def create(self, actor: User, workspace_id: int, fields: Mapping[str, Any]) -> Task:
        async with self._db.transaction() as tx:
            await require_member(tx, workspace_id, actor.id)
            await _check_assignees(tx, workspace_id, [fields])
            task = await self._tasks(tx, workspace_id).create(fields)
            await record_task_events(self._db, tx, actor.id, *_created(task))
            return task

    async def create_many(
        self, actor: User, workspace_id: int, items: Sequence[Mapping[str, Any]]
    ) -> list[Task]:
        """All the tasks in one transaction, or none of them."""
        async with self._db.transaction() as tx:
            await require_member(tx, workspace_id, actor.id)
            await _check_assignees(tx, workspace_id, items, field="items[{}].assignee_id")
            tasks = self._tasks(tx, workspace_id)
            ids = await tasks.create_many(items)
            created = await tasks.get_many(ids)
            await record_task_events(
                self._db, tx, actor.id, *(c for t in created for c in _created(t))
            )
            return created

    async def get(self, actor: User, workspace_id: int, task_id: int) -> Task:
        """The task, from the cache when it is there: then with no database round trip.

        The membership comes from its cache, and the row is read on a session that
        connects only if a statement runs; a cached row runs none (a miss is loaded on
        the cache's own session). A read needs no commit, so nothing else is lost.
        With the task cache off, the row is read on the read path: one statement, no
        BEGIN or COMMIT round trip on PostgreSQL.
        """
        await require_member(self._db, workspace_id, actor.id)
        if not self._cache_reads:
            async with self._db.transaction(read_only=True) as tx:
                return await self._tasks(tx, workspace_id).get(task_id)
        async with self._db.session() as session:
            return await self._tasks(Transaction(session, self._db), workspace_id).get(task_id)

    async def list(
        self,
        actor: User,
        workspace_id: int,
        query: TaskQuery,
        *,
        limit: int,
        cursor: str | None = None,
        page: int | None = None,
    ) -> TaskListing:
        if page is not None and cursor is not None:
            raise InvalidInputError(
                "use either cursor (keyset) or page (offset), not both",
                field="cursor",
                rule="exclusive",
            )
        async with self._db.transaction(read_only=True) as tx:
            await require_member(tx, workspace_id, actor.id)
            tasks = self._tasks(tx, workspace_id)
            filters, sort = query.filters(), query.sort
            if page is not None:
                numbered = await tasks.page(filters=filters, sort=sort, page=page, page_size=limit)
                return TaskListing(numbered.items, total=numbered.total, page=numbered.page)
            keyset = await tasks.list(filters=filters, sort=sort, limit=limit, cursor=cursor)
            return TaskListing(keyset.items, next_cursor=keyset.next_cursor)

    async def update(
        self,
        actor: User,
        workspace_id: int,
        task_id: int,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None,
    ) -> Task:
        """Apply ``changes`` if the task is at ``expected_version`` (``None``: any version)."""
        if not changes:
            raise InvalidInputError("nothing to change", field="body", rule="not_empty")
        async with self._db.transaction() as tx:
            await require_member(tx, workspace_id, actor.id)
            await _check_assignees(tx, workspace_id, [changes])
            tasks = self._tasks(tx, workspace_id)
            assigning = "assignee_id" in changes
            before = None
            if assigning:
                # Read from the database, not the task cache: a stale cached assignee
                # would announce an assignment that did not change, or miss one.
                fresh = UncachedTaskRepository(
                    tx, signing_key=self._signing_key, workspace=workspace_id
                )
                before = (await fresh.get(task_id)).assignee_id
            task = await tasks.update(task_id, changes, expected_version=expected_version)
            reassigned = assigning and task.assignee_id != before
            updated = TaskUpdated(
                task_id=task.id,
                version=task.version,
                fields=tuple(sorted(changes)),
                assignee_id=task.assignee_id,
                reassigned=reassigned,
            )
            events: list[tuple[EventPayload, Task]] = [(updated, task)]
            if reassigned:
                events.append((_assigned(task, previous=before), task))
            await record_task_events(self._db, tx, actor.id, *events)
            return task

    async def delete(
        self, actor: User, workspace_id: int, task_id: int, *, expected_version: int | None = None
    ) -> None:
        """Soft-delete the task, if it is at ``expected_version`` (``None``: any version).

        The version is compared by the deleting statement itself, never read first: a
        write landing in between makes this a StaleVersionError, not a lost update.
        """
        async with self._db.transaction() as tx:
            await require_member(tx, workspace_id, actor.id)
            tasks = self._tasks(tx, workspace_id)
            await tasks.delete(task_id, expected_version=expected_version)
            # The row the delete returned is in the session: no second query for its version.
            task = await tasks.with_deleted().get(task_id)
            deleted = TaskDeleted(
                task_id=task.id, version=task.version, assignee_id=task.assignee_id
            )
            await record_task_events(self._db, tx, actor.id, (deleted, task))

    async def restore(
        self, actor: User, workspace_id: int, task_id: int, *, expected_version: int | None = None
    ) -> Task:
        """Undo the task's deletion, if it is at ``expected_version`` (``None``: any version).

        A delete bumps the version, so a deleted task is one version past its last ETag.
        """
        async with self._db.transaction() as tx:
            await require_member(tx, workspace_id, actor.id)
            deleted = await _deleted_locked(tx, workspace_id, task_id)
            task = await self._tasks(tx, workspace_id).restore(
                task_id, expected_version=expected_version
            )
            if deleted:  # restoring a live task changes nothing and announces nothing
                restored = TaskRestored(task_id=task.id, version=task.version)
                await record_task_events(self._db, tx, actor.id, (restored, task))
            return task

    async def audit(
        self, actor: User, workspace_id: int, *, limit: int, cursor: str | None
    ) -> AuditPage:
        """The workspace's audit log, newest first, paged by a signed cursor."""
        size = check_limit(limit, maximum=MAX_LIMIT)
        scope = f"audit|{workspace_id}"
        before_id = None
        if cursor is not None:
            (before_id,), _ = self._audit_cursors.decode(cursor, scope=scope)
        async with self._db.transaction(read_only=True) as tx:
            await require_member(tx, workspace_id, actor.id)
            entries = list(
                await audit_entries(
                    tx, workspace_id=workspace_id, limit=size + 1, before_id=before_id
                )
            )
        more = len(entries) > size
        entries = entries[:size]
        next_cursor = (
            self._audit_cursors.encode([entries[-1].id], scope=scope, direction="next")
            if more
            else None
        )
        return AuditPage(entries, next_cursor)


async def _deleted_locked(tx: Transaction, workspace_id: int, task_id: int) -> bool:
    """Whether the task is deleted now, its row locked until the commit (PostgreSQL).

    The lock keeps a concurrent restore from landing between this read and ours: ours
    then finds a live row, changes nothing, and must announce nothing. SQLite has one
    writer at a time already.
    """
    state = (
        select(Task.deleted_at)
        .where(Task.id == task_id, Task.workspace_id == workspace_id)
        .with_for_update()
    )
    scope = {WORKSPACE_OPTION: workspace_id, INCLUDE_DELETED_OPTION: True}
    row = (await tx.session.execute(state, execution_options=scope)).first()
    return row is not None and row.deleted_at is not None


def _assigned(task: Task, *, previous: int | None) -> TaskAssigned:
    return TaskAssigned(
        task_id=task.id,
        version=task.version,
        title=task.title,
        assignee_id=task.assignee_id,
        previous_assignee_id=previous,
    )


def _created(task: Task) -> list[tuple[EventPayload, Task]]:
    """``task.created``, and ``task.assigned`` when it was created with an assignee."""
    created: list[tuple[EventPayload, Task]] = [
        (TaskCreated(task_id=task.id, version=task.version), task)
    ]
    if task.assignee_id is not None:
        created.append((_assigned(task, previous=None), task))
    return created


async def _check_assignees(
    tx: Transaction,
    workspace_id: int,
    rows: Sequence[Mapping[str, Any]],
    *,
    field: str = "assignee_id",
) -> None:
    """Every assignee named must be a member of the workspace (one query for all rows).

    ``field`` names the refused one; ``{}`` in it becomes the row's index, found (one
    query per assignee, in order) only once the batch is known to hold a stranger.
    """
    wanted = {row["assignee_id"] for row in rows if row.get("assignee_id") is not None}
    members = MembershipRepository(tx, workspace=workspace_id)
    if not wanted or await members.all_members(wanted):
        return
    index = 0
    if "{}" in field:
        checked: set[int] = set()
        for index, row in enumerate(rows):  # noqa: B007 - the index names the row refused
            assignee = row.get("assignee_id")
            if assignee is None or assignee in checked:
                continue
            if not await members.all_members([assignee]):
                break
            checked.add(assignee)
    raise InvalidInputError(
        "the assignee is not a member of this workspace", field=field.format(index), rule="member"
    )
