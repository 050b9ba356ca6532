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

from corestone import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from corestone.db import Database, Transaction
from corestone.sagas import Saga, SagaOrchestrator, SagaRegistry, SagaStep, StepContext
from taskboard.domain.models import Membership, Role, User, Workspace
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


async def _add_owner(ctx: StepContext) -> dict[str, Any]:
    workspace_id = ctx.results["workspace"]["id"]
    owner_id = ctx.payload["owner_id"]
    members = MembershipRepository(ctx.session, workspace=workspace_id)
    await members.create({"user_id": owner_id, "role": Role.OWNER.value})
    return {"workspace_id": workspace_id, "user_id": owner_id}


async def _remove_owner(ctx: StepContext) -> None:
    if ctx.result is None:
        return
    members = MembershipRepository(ctx.session, workspace=ctx.result["workspace_id"])
    for membership in await members.of_user(ctx.result["user_id"]):
        await members.delete(membership.id)


CREATE_WORKSPACE = Saga(
    "taskboard.create_workspace",
    [
        SagaStep("workspace", _create_row, _delete_row, transactional=True),
        SagaStep("owner", _add_owner, _remove_owner, transactional=True),
    ],
)
SAGAS = SagaRegistry([CREATE_WORKSPACE])
"""Every saga taskboard runs: what its recovery worker (and the CLI) can resume."""


async def require_member(tx: Transaction, workspace_id: int, user_id: int) -> None:
    """NotFoundError unless ``user_id`` belongs to the workspace (never a hint it exists)."""
    if not await MembershipRepository(tx, workspace=workspace_id).is_member(user_id):
        raise NotFoundError("workspace not found")


class WorkspaceService:
    def __init__(self, db: Database, sagas: SagaOrchestrator | None = None) -> None:
        self._db = db
        self._sagas = sagas if sagas is not None else SagaOrchestrator(db, SAGAS)

    async def create(self, actor: User, *, name: str) -> Workspace:
        """A workspace with ``actor`` as its owner (the ``create_workspace`` saga)."""
        outcome = await self._sagas.run(CREATE_WORKSPACE, {"name": name, "owner_id": actor.id})
        workspace_id = outcome.raise_for_status().results["workspace"]["id"]
        async with self._db.transaction(read_only=True) as tx:
            # NotFoundError if someone deleted it in the meantime.
            return await WorkspaceRepository(tx).get(workspace_id)

    async def add_member(
        self, actor: User, workspace_id: int, *, user_id: int, role: Role
    ) -> Membership:
        """Add ``user_id`` to the workspace; only an owner may."""
        async with self._db.transaction() as tx:
            members = MembershipRepository(tx, workspace=workspace_id)
            if not await members.is_member(actor.id, role=Role.OWNER):
                await require_member(tx, workspace_id, actor.id)  # a non-member gets 404
                raise PermissionDeniedError("only an owner can add members")
            if await UserRepository(tx).find(user_id) is None:
                raise InvalidInputError("no such user", field="user_id", rule="exists")
            if await members.is_member(user_id):
                raise ConflictError("the user is already a member")
            return await members.create({"user_id": user_id, "role": role.value})
