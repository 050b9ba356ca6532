"""Workspaces and their members; creating a workspace is a durable saga.

Existence is a secret: a caller who is not a member of a workspace gets NotFoundError
for it, exactly as if it did not exist.

Creating a workspace runs the ``taskboard.create_workspace`` saga: the workspace row,
then the owner's membership (the welcome email joins as a step once the email service
exists). Both steps are transactional, so each commits together with its record in
``corestone_sagas`` and takes effect exactly once; a process that dies between them
leaves a saga that recovery (``taskboard serve``'s worker, ``taskboard worker``, or
``corestone saga recover --app taskboard.services.workspaces:SAGAS``) finishes.
If a step fails for good, the workspace row is deleted again (memberships cascade).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from corestone import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from corestone.db import Database
from corestone.sagas import Saga, SagaOrchestrator, SagaRegistry, SagaStep, StepContext
from taskboard.domain.models import Membership, Role, User, Workspace

__all__ = ["CREATE_WORKSPACE", "SAGAS", "WorkspaceService", "require_member"]


async def _create_row(ctx: StepContext) -> dict[str, Any]:
    workspace = Workspace(name=ctx.payload["name"])
    ctx.session.add(workspace)
    await ctx.session.flush()
    return {"id": workspace.id}


async def _delete_row(ctx: StepContext) -> None:
    if ctx.result is not None:  # memberships and tasks go with it (ON DELETE CASCADE)
        await ctx.session.execute(delete(Workspace).where(Workspace.id == ctx.result["id"]))


async def _add_owner(ctx: StepContext) -> dict[str, Any]:
    workspace_id = ctx.results["workspace"]["id"]
    owner_id = ctx.payload["owner_id"]
    ctx.session.add(Membership(workspace_id=workspace_id, user_id=owner_id, role=Role.OWNER))
    await ctx.session.flush()
    return {"workspace_id": workspace_id, "user_id": owner_id}


async def _remove_owner(ctx: StepContext) -> None:
    if ctx.result is not None:
        await ctx.session.execute(
            delete(Membership).where(
                Membership.workspace_id == ctx.result["workspace_id"],
                Membership.user_id == ctx.result["user_id"],
            )
        )


CREATE_WORKSPACE = Saga(
    "taskboard.create_workspace",
    [
        SagaStep("workspace", _create_row, _delete_row, transactional=True),
        SagaStep("owner", _add_owner, _remove_owner, transactional=True),
    ],
)
SAGAS = SagaRegistry([CREATE_WORKSPACE])
"""Every saga taskboard runs: what its recovery worker (and the CLI) can resume."""


async def require_member(session: AsyncSession, workspace_id: int, user_id: int) -> Membership:
    """The caller's membership of the workspace, or NotFoundError (never a hint it exists)."""
    membership = await session.get(Membership, (workspace_id, user_id))
    if membership is None:
        raise NotFoundError("workspace not found")
    return membership


class WorkspaceService:
    def __init__(self, db: Database, sagas: SagaOrchestrator | None = None) -> None:
        self._db = db
        self._sagas = sagas if sagas is not None else SagaOrchestrator(db, SAGAS)

    async def create(self, actor: User, *, name: str) -> Workspace:
        """A workspace with ``actor`` as its owner (the ``create_workspace`` saga)."""
        outcome = await self._sagas.run(CREATE_WORKSPACE, {"name": name, "owner_id": actor.id})
        workspace_id = outcome.raise_for_status().results["workspace"]["id"]
        async with self._db.transaction(read_only=True) as tx:
            workspace = await tx.session.get(Workspace, workspace_id)
        if workspace is None:  # deleted by someone else in the meantime
            raise NotFoundError("workspace not found")
        return workspace

    async def add_member(
        self, actor: User, workspace_id: int, *, user_id: int, role: Role
    ) -> Membership:
        """Add ``user_id`` to the workspace; only an owner may."""
        async with self._db.transaction() as tx:
            session = tx.session
            mine = await require_member(session, workspace_id, actor.id)
            if mine.role != Role.OWNER:
                raise PermissionDeniedError("only an owner can add members")
            if await session.get(User, user_id) is None:
                raise InvalidInputError("no such user", field="user_id", rule="exists")
            if await session.get(Membership, (workspace_id, user_id)) is not None:
                raise ConflictError("the user is already a member")
            membership = Membership(workspace_id=workspace_id, user_id=user_id, role=role)
            session.add(membership)
        return membership

    async def get(self, actor: User, workspace_id: int) -> Workspace:
        async with self._db.transaction(read_only=True) as tx:
            session = tx.session
            await require_member(session, workspace_id, actor.id)
            workspace = await session.get(Workspace, workspace_id)
            if workspace is None:  # deleted between the two reads
                raise NotFoundError("workspace not found")
            return workspace

    async def members(self, workspace_id: int) -> list[Membership]:
        async with self._db.transaction(read_only=True) as tx:
            session = tx.session
            rows = await session.scalars(
                select(Membership).where(Membership.workspace_id == workspace_id)
            )
            return list(rows)
