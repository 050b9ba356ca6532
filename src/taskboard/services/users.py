"""Users: sign-up and the caller's own view."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from corestone import AuthenticationError, ConflictError
from corestone.db import Database
from taskboard.domain.models import Membership, User, Workspace
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
        """A new user and their first token (shown only now)."""
        async with self._db.transaction() as tx:
            session = tx.session
            exists = await session.scalar(select(User.id).where(User.email == email))
            if exists is not None:
                raise ConflictError("a user with this email already exists")
            user = User(name=name, email=email)
            session.add(user)
            await session.flush()
            token = await issue_token(session, user.id)
        return user, token

    async def authenticate(self, token: str | None) -> User:
        """The user behind ``token``, or AuthenticationError."""
        if not token:
            raise AuthenticationError("missing bearer token")
        async with self._db.transaction(read_only=True) as tx:
            session = tx.session
            return await user_for_token(session, token)

    async def me(self, user: User) -> Me:
        async with self._db.transaction(read_only=True) as tx:
            session = tx.session
            rows = await session.execute(
                select(Workspace, Membership.role)
                .join(Membership, Membership.workspace_id == Workspace.id)
                .where(Membership.user_id == user.id)
                .order_by(Workspace.id)
            )
            return Me(user, [(ws, role) for ws, role in rows.tuples()])
