"""The demo data `taskboard serve` creates on first start, and a fresh demo token each start."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from corestone.db import Database
from taskboard.domain.models import Membership, Role, Task, TaskStatus, User, Workspace
from taskboard.services.tokens import issue_token

__all__ = ["DEMO_EMAIL", "Demo", "ensure_demo"]

DEMO_EMAIL = "demo@taskboard.example"


@dataclass(frozen=True, slots=True)
class Demo:
    user_id: int
    workspace_id: int
    token: str
    created: bool


async def ensure_demo(db: Database) -> Demo:
    """Create the demo user and workspace if missing; always mint a new demo token.

    Minting replaces the previous demo token, since tokens are stored hashed and the old
    one cannot be shown again.
    """
    async with db.transaction() as tx:
        session = tx.session
        user = await session.scalar(select(User).where(User.email == DEMO_EMAIL))
        created = user is None
        if user is None:
            user = User(name="Demo User", email=DEMO_EMAIL)
            workspace = Workspace(name="Demo workspace")
            session.add_all([user, workspace])
            await session.flush()
            session.add(Membership(workspace_id=workspace.id, user_id=user.id, role=Role.OWNER))
            for title, status in (
                ("Read the README", TaskStatus.DONE),
                ("Point CORESTONE_DATABASE_URL at PostgreSQL", TaskStatus.IN_PROGRESS),
                ("Invite a colleague", TaskStatus.OPEN),
            ):
                session.add(
                    Task(
                        workspace_id=workspace.id,
                        title=title,
                        description="",
                        status=status.value,
                        version=1,
                    )
                )
            workspace_id = workspace.id
        else:
            workspace_id = (
                await session.scalar(
                    select(Membership.workspace_id)
                    .where(Membership.user_id == user.id, Membership.role == Role.OWNER)
                    .order_by(Membership.workspace_id)
                    .limit(1)
                )
                or 0
            )
        token = await issue_token(session, user.id, label="demo", replace=True)
        return Demo(user.id, workspace_id, token, created)
