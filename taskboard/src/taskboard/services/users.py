"""Users: sign-up, authentication through the principal cache, the caller's own view."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exists, select

from corestone import AuthenticationError, ConflictError, NotFoundError
from corestone.db import ALL_WORKSPACES, Database
from corestone.web import forget_access_after_commit, token_digest
from taskboard.domain.models import ApiToken, Membership, Role, TokenRole, User, Workspace
from taskboard.services.access import access_for, user_from_values
from taskboard.services.repositories import (
    MembershipRepository,
    UserRepository,
    WorkspaceRepository,
)
from taskboard.services.tokens import issue_token, revoke_tokens

__all__ = ["Me", "UserService"]


@dataclass(frozen=True, slots=True)
class Me:
    user: User
    workspaces: list[tuple[Workspace, str]]


class UserService:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._access = access_for(db)

    async def create(self, *, name: str, email: str) -> tuple[User, str]:
        """A new user and their first token (shown only now); emails are kept lower case."""
        email = email.lower()
        async with self._db.transaction() as tx:
            users = UserRepository(tx)
            # The unique index settles a race between two sign-ups (ConflictError too).
            if await users.exists({"email": email}):
                raise ConflictError("a user with this email already exists")
            user = await users.create({"name": name, "email": email})
            token = await issue_token(tx, user.id)
        return user, token

    async def authenticate(self, token: str | None) -> User:
        """The user behind ``token`` (from the principal cache when it can), or 401.

        The user is detached, made from cached column values: read it, never change it.
        """
        if not token:
            raise AuthenticationError("missing bearer token")
        return user_from_values(await self._access.authenticate(token))

    async def create_token(
        self, user_id: int, *, role: TokenRole = TokenRole.USER, label: str = "cli"
    ) -> str:
        """A new token for an existing user (shown only now); NotFoundError if there is none."""
        async with self._db.transaction() as tx:
            if await tx.session.get(User, user_id) is None:
                raise NotFoundError(f"no user with id {user_id}")
            return await issue_token(tx, user_id, label=label, role=role)

    async def holds_operator_token(self, user: User, token: str) -> bool:
        """Whether ``token`` is one of ``user``'s operator tokens (not cached, as below)."""
        operator_token = exists().where(
            ApiToken.token_hash == token_digest(token),
            ApiToken.user_id == user.id,
            ApiToken.role == TokenRole.OPERATOR.value,
        )
        async with self._db.transaction(read_only=True) as tx:
            return bool(await tx.session.scalar(select(operator_token)))

    async def may_operate(self, user: User, token: str) -> bool:
        """Whether ``user``, calling with ``token``, may read the operations dashboard.

        Owners of any workspace may (they run the service for their team), and so may an
        operator token (``taskboard token create --operator``). One indexed query, not
        cached: a revoked token or a lost ownership is refused at the next poll, and an
        operator polls every few seconds, not thousands of times.
        """
        operator_token = exists().where(
            ApiToken.token_hash == token_digest(token),
            ApiToken.user_id == user.id,
            ApiToken.role == TokenRole.OPERATOR.value,
        )
        owner = exists().where(Membership.user_id == user.id, Membership.role == Role.OWNER.value)
        async with self._db.transaction(read_only=True) as tx:
            return bool(await tx.session.scalar(select(operator_token | owner)))

    async def revoke_tokens(self, user_id: int, *, label: str | None = None) -> int:
        """Revoke the user's tokens (of ``label``, or all): refused on every instance at once."""
        async with self._db.transaction() as tx:
            return await revoke_tokens(tx, user_id, label=label)

    async def delete(self, user_id: int) -> None:
        """Delete the user; their tokens and memberships go with the row (ON DELETE CASCADE).

        NotFoundError if there is no such user. The cascade bypasses the repositories, so
        the cached principal and memberships are dropped explicitly, after commit.
        """
        async with self._db.transaction() as tx:
            memberships = await MembershipRepository(tx, workspace=ALL_WORKSPACES).of_user(user_id)
            await UserRepository(tx).delete(user_id)
            forget_access_after_commit(
                tx,
                users=[user_id],
                memberships=[(m.workspace_id, user_id) for m in memberships],
            )

    async def me(self, user: User) -> Me:
        """``user`` and every workspace they belong to, with their role, by workspace id."""
        async with self._db.transaction(read_only=True) as tx:
            # The caller's own memberships, across workspaces: that is what this view is.
            memberships = await MembershipRepository(tx, workspace=ALL_WORKSPACES).of_user(user.id)
            roles = {m.workspace_id: m.role for m in memberships}
            workspaces = await WorkspaceRepository(tx).get_many(list(roles))
        return Me(user, [(ws, roles[ws.id]) for ws in workspaces])
