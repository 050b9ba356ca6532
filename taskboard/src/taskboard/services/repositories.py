"""taskboard's repositories: every read and write of its rows goes through one of these.

They are :class:`corestone.db.Repository` subclasses, so users, workspaces, memberships
and tasks share one way of reading, filtering, validating and writing. Tasks and
memberships are tenant rows: a repository made for one workspace cannot see another's.
The methods added here are named queries built only on the public repository API.
"""

from __future__ import annotations

from collections.abc import Collection

from corestone.db import Repository
from taskboard.domain.models import Membership, Role, Task, User, Workspace

__all__ = [
    "MAX_LIMIT",
    "MembershipRepository",
    "TaskRepository",
    "UncachedTaskRepository",
    "UserRepository",
    "WorkspaceRepository",
]

MAX_LIMIT = 100
"""The largest page of tasks or audit entries one request may ask for."""


class UserRepository(Repository[User]):
    model = User
    filterable = ("email",)

    async def find_by_email(self, email: str) -> User | None:
        """The user with this (already normalised) email, or None."""
        found = await self.page(filters={"email": email}, page_size=1)
        return found.items[0] if found.items else None


class WorkspaceRepository(Repository[Workspace]):
    model = Workspace


class MembershipRepository(Repository[Membership]):
    """Memberships of the workspace the repository is scoped to (or ``ALL_WORKSPACES``)."""

    model = Membership
    filterable = ("user_id", "role")
    sortable = ("workspace_id",)
    default_sort = "workspace_id"

    async def is_member(self, user_id: int, *, role: Role | None = None) -> bool:
        """Whether ``user_id`` belongs to the workspace (with ``role``, if given)."""
        wanted: dict[str, object] = {"user_id": user_id}
        if role is not None:
            wanted["role"] = role.value
        return await self.exists(wanted)

    async def all_members(self, user_ids: Collection[int]) -> bool:
        """Whether every one of ``user_ids`` belongs to the workspace (one query)."""
        wanted = sorted(set(user_ids))
        return await self.count({"user_id": {"in": wanted}}) == len(wanted)

    async def of_user(self, user_id: int, *, role: Role | None = None) -> list[Membership]:
        """Every membership of ``user_id`` in scope, by workspace id (all pages)."""
        wanted: dict[str, object] = {"user_id": user_id}
        if role is not None:
            wanted["role"] = role.value
        found: list[Membership] = []
        page = 1
        while True:
            batch = await self.page(filters=wanted, page=page, page_size=self.max_limit)
            found.extend(batch.items)
            if not batch.items or len(found) >= batch.total:
                return found
            page += 1


class TaskRepository(Repository[Task]):
    model = Task
    filterable = ("status", "assignee_id", "title", "description", "created_at", "updated_at")
    sortable = ("id", "created_at", "updated_at", "title", "status")
    default_sort = "id"
    max_limit = MAX_LIMIT
    cache_reads = True  # GET …/tasks/{id} is served from the cache (docs/taskboard.md)
    user_columns = ("assignee_id",)


class UncachedTaskRepository(TaskRepository):
    """Tasks read straight from the database (``TASKBOARD_TASK_CACHE=off``).

    Its writes still drop the cached rows after commit, like ``TaskRepository``'s.
    """

    cache_reads = False
