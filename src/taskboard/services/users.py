"""Users: sign-up and the caller's own view."""

from __future__ import annotations

from dataclasses import dataclass

from corestone import AuthenticationError, ConflictError
from corestone.db import ALL_WORKSPACES, Database
from taskboard.domain.models import User, Workspace
from taskboard.services.repositories import (
    MembershipRepository,
    UserRepository,
    WorkspaceRepository,
)
from taskboard.services.tokens import issue_token, user_for_token

__all__ = ["Me", "UserService"]


@dataclass(frozen=True, slots=True)
class Me:
    user: User
    workspaces: list[tuple[Workspace, str]]


class UserService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, *, name: str, email: str) -> tuple[User, str]:
        """A new user and their first token (shown only now); emails are kept lower case."""
        email = email.lower()
        async with self._db.transaction() as tx:
            users = UserRepository(tx)
            # The unique index settles a race between two sign-ups (ConflictError too).
            if await users.exists({"email": email}):
                raise ConflictError("a user with this email already exists")
            user = await users.create({"name": name, "email": email})
            token = await issue_token(tx.session, user.id)
        return user, token

    async def authenticate(self, token: str | None) -> User:
        """The user behind ``token``, or AuthenticationError."""
        if not token:
            raise AuthenticationError("missing bearer token")
        async with self._db.transaction(read_only=True) as tx:
            return await user_for_token(tx.session, token)

    async def me(self, user: User) -> Me:
        """``user`` and every workspace they belong to, with their role, by workspace id."""
        async with self._db.transaction(read_only=True) as tx:
            # The caller's own memberships, across workspaces: that is what this view is.
            memberships = await MembershipRepository(tx, workspace=ALL_WORKSPACES).of_user(user.id)
            roles = {m.workspace_id: m.role for m in memberships}
            workspaces = await WorkspaceRepository(tx).get_many(list(roles))
        return Me(user, [(ws, roles[ws.id]) for ws in workspaces])
