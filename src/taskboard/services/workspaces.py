"""Workspaces and their members.

Existence is a secret: a caller who is not a member of a workspace gets NotFoundError
for it, exactly as if it did not exist.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from corestone import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from corestone.db import Database
from taskboard.domain.models import Membership, Role, User, Workspace

__all__ = ["WorkspaceService", "require_member"]


async def require_member(session: AsyncSession, workspace_id: int, user_id: int) -> Membership:
    """The caller's membership of the workspace, or NotFoundError (never a hint it exists)."""
    membership = await session.get(Membership, (workspace_id, user_id))
    if membership is None:
        raise NotFoundError("workspace not found")
    return membership


class WorkspaceService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, actor: User, *, name: str) -> Workspace:
        """A workspace with ``actor`` as its owner, both rows in one transaction."""
        async with self._db.transaction() as tx:
            session = tx.session
            workspace = Workspace(name=name)
            session.add(workspace)
            await session.flush()
            session.add(Membership(workspace_id=workspace.id, user_id=actor.id, role=Role.OWNER))
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
