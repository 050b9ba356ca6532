"""The demo data `taskboard serve` creates on first start, and a fresh demo token each start."""

from __future__ import annotations

from dataclasses import dataclass

from corestone.db import ALL_WORKSPACES, Database
from taskboard.domain.models import Role, TaskStatus
from taskboard.services.repositories import (
    MembershipRepository,
    TaskRepository,
    UserRepository,
    WorkspaceRepository,
)
from taskboard.services.tokens import issue_token

__all__ = ["DEMO_EMAIL", "Demo", "ensure_demo"]

DEMO_EMAIL = "demo@taskboard.example"
DEMO_TASKS = (
    ("Read the README", TaskStatus.DONE),
    ("Point CORESTONE_DATABASE_URL at PostgreSQL", TaskStatus.IN_PROGRESS),
    ("Invite a colleague", TaskStatus.OPEN),
)


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
        user = await UserRepository(tx).find_by_email(DEMO_EMAIL)
        created = user is None
        if user is None:
            user = await UserRepository(tx).create({"name": "Demo User", "email": DEMO_EMAIL})
            workspace = await WorkspaceRepository(tx).create({"name": "Demo workspace"})
            workspace_id = workspace.id
            await MembershipRepository(tx, workspace=workspace_id).create(
                {"user_id": user.id, "role": Role.OWNER.value}
            )
            await TaskRepository(tx, workspace=workspace_id).create_many(
                [{"title": title, "status": status.value} for title, status in DEMO_TASKS]
            )
        else:
            owned = await MembershipRepository(tx, workspace=ALL_WORKSPACES).of_user(
                user.id, role=Role.OWNER
            )
            workspace_id = owned[0].workspace_id if owned else 0
        token = await issue_token(tx, user.id, label="demo", replace=True)
        return Demo(user.id, workspace_id, token, created)
