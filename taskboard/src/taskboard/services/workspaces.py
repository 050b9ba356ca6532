"""Workspaces and their members; creating a workspace is a durable saga.

Existence is a secret: a caller who is not a member of a workspace gets NotFoundError
for it, exactly as if it did not exist.

Creating a workspace runs the ``taskboard.create_workspace`` saga: the workspace row,
then the owner's membership, then the ``workspace.created`` event (the step keeps its
key, ``welcome``: the owner's welcome email is that event's consumer now,
``services.notifications``). Every step is transactional, so each commits together
with its record in ``corestone_sagas`` and takes effect exactly once; a process that
dies between them leaves a saga that recovery (``taskboard serve``'s worker,
``taskboard worker``, or
``corestone saga recover --app taskboard.services.workspaces:SAGAS``) finishes.
If a step fails for good, the workspace row is deleted again (memberships cascade) and,
the event being recorded only by the last step, nothing was announced.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from corestone import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from corestone.context import bind
from corestone.context import correlation_id as current_correlation_id
from corestone.db import Database, Transaction, TransactionBackend
from corestone.db.audit import write_audit
from corestone.events import DomainEvent
from corestone.sagas import Saga, SagaOrchestrator, SagaRegistry, SagaStep, StepContext
from corestone.web import forget_access_after_commit
from taskboard.domain.models import Membership, Role, User, Workspace
from taskboard.events import MemberAdded, MemberRemoved, WorkspaceCreated, bus_for
from taskboard.services.access import access_for
from taskboard.services.repositories import (
    MembershipRepository,
    UserRepository,
    WorkspaceRepository,
)

__all__ = ["CREATE_WORKSPACE", "SAGAS", "WorkspaceService", "require_member"]


async def _create_row(ctx: StepContext) -> dict[str, Any]:
    workspace = await WorkspaceRepository(ctx.session).create({"name": ctx.payload["name"]})
    return {"id": workspace.id}


async def _delete_row(ctx: StepContext) -> None:
    if ctx.result is None:
        return
    workspaces = WorkspaceRepository(ctx.session)
    if await workspaces.find(ctx.result["id"]) is not None:
        await workspaces.delete(ctx.result["id"])  # memberships and tasks cascade
        if ctx.tx is not None:  # the cascade bypasses the repositories: drop what is cached
            forget_access_after_commit(ctx.tx, workspaces=[ctx.result["id"]])


async def _add_owner(ctx: StepContext) -> dict[str, Any]:
    workspace_id = ctx.results["workspace"]["id"]
    owner_id = ctx.payload["owner_id"]
    members = MembershipRepository(ctx.session, workspace=workspace_id)
    await members.create({"user_id": owner_id, "role": Role.OWNER.value})
    return {"workspace_id": workspace_id, "user_id": owner_id}


async def _remove_owner(ctx: StepContext) -> None:
    if ctx.result is None:
        return
    workspace_id, user_id = ctx.result["workspace_id"], ctx.result["user_id"]
    members = MembershipRepository(ctx.session, workspace=workspace_id)
    for membership in await members.of_user(user_id):
        await members.delete(membership.id)
    if ctx.tx is not None:
        forget_access_after_commit(ctx.tx, memberships=[(workspace_id, user_id)])


async def _welcome(ctx: StepContext) -> dict[str, Any]:
    """Record ``workspace.created`` in this step's transaction; its consumer welcomes the owner.

    The event carries the request's correlation id (from the payload: a recovering
    worker runs this step with its own). No compensation: this is the last step, so
    nothing after it can fail the saga, and nothing is announced before it commits.
    """
    assert ctx.tx is not None  # a transactional step
    workspace_id = ctx.results["workspace"]["id"]
    owner_id = ctx.payload["owner_id"]
    with bind(correlation=ctx.payload.get("correlation_id")):
        event = DomainEvent.create(
            WorkspaceCreated(workspace_id=workspace_id, owner_id=owner_id),
            aggregate_type="workspace",
            aggregate_id=workspace_id,
            workspace_id=workspace_id,
            actor=owner_id,
        )
    await bus_for(ctx.database).record(event, transaction=ctx.tx)
    return {"event_id": str(event.id)}


CREATE_WORKSPACE = Saga(
    "taskboard.create_workspace",
    [
        SagaStep("workspace", _create_row, _delete_row, transactional=True),
        SagaStep("owner", _add_owner, _remove_owner, transactional=True),
        SagaStep("welcome", _welcome, transactional=True),
    ],
)
SAGAS = SagaRegistry([CREATE_WORKSPACE])
"""Every saga taskboard runs: what its recovery worker (and the CLI) can resume."""


async def require_member(
    where: Transaction | TransactionBackend, workspace_id: int, user_id: int
) -> str:
    """The user's role in the workspace, or NotFoundError (never a hint that it exists).

    Read through the membership cache (``services.access``), whose load runs on its own
    short session: inside a transaction (``where``) it neither nests in it nor waits on
    its locks; outside one (``where`` is the database) a cached answer costs no query.
    """
    database = where.database if isinstance(where, Transaction) else where
    role: str = await access_for(database).membership(workspace_id, user_id)
    return role


class WorkspaceService:
    def __init__(self, db: Database, sagas: SagaOrchestrator | None = None) -> None:
        self._db = db
        self._sagas = sagas if sagas is not None else SagaOrchestrator(db, SAGAS)

    async def create(self, actor: User, *, name: str) -> Workspace:
        """A workspace with ``actor`` as its owner (the ``create_workspace`` saga)."""
        payload = {"name": name, "owner_id": actor.id, "correlation_id": current_correlation_id()}
        outcome = await self._sagas.run(CREATE_WORKSPACE, payload)
        workspace_id = outcome.raise_for_status().results["workspace"]["id"]
        async with self._db.transaction(read_only=True) as tx:
            # NotFoundError if someone deleted it in the meantime.
            return await WorkspaceRepository(tx).get(workspace_id)

    async def workspace_ids_of(self, actor: User) -> list[int]:
        """The ids of every workspace ``actor`` is a member of (what their ops views may show)."""
        async with self._db.transaction(read_only=True) as tx:
            rows = await tx.session.execute(
                select(Membership.workspace_id).where(Membership.user_id == actor.id)
            )
            return [int(workspace_id) for (workspace_id,) in rows]

    async def _require_owner(self, tx: Transaction, workspace_id: int, actor: User) -> None:
        if await require_member(tx, workspace_id, actor.id) != Role.OWNER.value:
            raise PermissionDeniedError("only an owner can change members")

    @staticmethod
    async def _lock_members(tx: Transaction, workspace_id: int) -> None:
        """Take the workspace row's lock: changes to its owners happen one at a time.

        Two owners removing (or demoting) each other at once each counted two owners
        before the other committed, and both went through, leaving none. On PostgreSQL
        the second now waits here and checks after the first committed; SQLite's write
        transactions (BEGIN IMMEDIATE) are one at a time already.
        """
        await tx.session.execute(
            select(Workspace.id).where(Workspace.id == workspace_id).with_for_update()
        )

    async def _require_owner_locked(self, tx: Transaction, workspace_id: int, actor: User) -> None:
        await self._lock_members(tx, workspace_id)
        if await require_member(tx, workspace_id, actor.id) != Role.OWNER.value:
            raise PermissionDeniedError("only an owner can change members")

    async def add_member(
        self, actor: User, workspace_id: int, *, user_id: int, role: Role
    ) -> Membership:
        """Add ``user_id`` to the workspace; only an owner may."""
        async with self._db.transaction() as tx:
            await self._require_owner(tx, workspace_id, actor)  # a non-member gets 404
            members = MembershipRepository(tx, workspace=workspace_id)
            if await UserRepository(tx).find(user_id) is None:
                raise InvalidInputError("no such user", field="user_id", rule="exists")
            if await members.is_member(user_id):
                raise ConflictError("the user is already a member")
            # Nothing to invalidate: a non-member's "no" is never cached.
            membership = await members.create({"user_id": user_id, "role": role.value})
            added = MemberAdded(workspace_id=workspace_id, user_id=user_id, role=role.value)
            event = DomainEvent.create(
                added,
                aggregate_type="workspace",
                aggregate_id=workspace_id,
                workspace_id=workspace_id,
                actor=actor.id,
            )
            await bus_for(self._db).record(event, transaction=tx)
            return membership

    async def set_role(self, actor: User, workspace_id: int, *, user_id: int, role: Role) -> None:
        """Change a member's role; only an owner may, and the last owner stays one."""
        async with self._db.transaction() as tx:
            await self._require_owner_locked(tx, workspace_id, actor)
            membership = await self._membership(tx, workspace_id, user_id)
            if role is not Role.OWNER:
                await self._keep_an_owner(tx, workspace_id, membership)
            # The repository's write invalidates the membership's entity tag after commit.
            await MembershipRepository(tx, workspace=workspace_id).update(
                membership.id, {"role": role.value}
            )

    async def remove_member(self, actor: User, workspace_id: int, *, user_id: int) -> None:
        """Remove a member; only an owner may, and not the last owner (ConflictError).

        In one transaction: the membership row goes, an audit entry and the
        ``member.removed`` event are written (the removed user's live streams of the
        workspace end when it reaches them). From the commit on, the removed user gets
        404 for the workspace on every instance.
        """
        async with self._db.transaction() as tx:
            await self._require_owner_locked(tx, workspace_id, actor)
            membership = await self._membership(tx, workspace_id, user_id)
            await self._keep_an_owner(tx, workspace_id, membership)
            await MembershipRepository(tx, workspace=workspace_id).delete(membership.id)
            # The delete invalidates the row's entity tag; this also drops the pair's own.
            forget_access_after_commit(tx, memberships=[(workspace_id, user_id)])
            changes: dict[str, dict[str, Any]] = {
                "user_id": {"before": user_id, "after": None},
                "role": {"before": membership.role, "after": None},
            }
            await write_audit(
                tx.session, entity="Membership", action="delete",
                rows=[(membership.id, workspace_id, changes)],
            )  # fmt: skip
            removed = MemberRemoved(
                workspace_id=workspace_id, user_id=user_id, role=membership.role
            )
            event = DomainEvent.create(
                removed,
                aggregate_type="workspace",
                aggregate_id=workspace_id,
                workspace_id=workspace_id,
                actor=actor.id,
            )
            await bus_for(self._db).record(event, transaction=tx)

    @staticmethod
    async def _membership(tx: Transaction, workspace_id: int, user_id: int) -> Membership:
        found = await MembershipRepository(tx, workspace=workspace_id).of_user(user_id)
        if not found:
            raise NotFoundError("no such member")
        return found[0]

    @staticmethod
    async def _keep_an_owner(tx: Transaction, workspace_id: int, membership: Membership) -> None:
        members = MembershipRepository(tx, workspace=workspace_id)
        if membership.role == Role.OWNER.value and await members.count({"role": "owner"}) == 1:
            raise ConflictError("a workspace keeps at least one owner")
