"""Who is calling, and are they a member: taskboard's loaders for corestone's AccessCache.

A request's principal (token → user) and membership (workspace and user → role) are read
through the cache (:class:`corestone.web.AccessCache`), so a request whose task is cached
too makes no database round trip. The loaders tag what they read with the repository's
entity tags, so a write to the user's row or the membership's row, through a repository,
invalidates the lookup on every instance; token revocation, user deletion and removed
memberships also drop them explicitly after commit (``tokens``, ``users``, ``workspaces``).
"""

from __future__ import annotations

import hmac
from typing import Any

from sqlalchemy import Table, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from corestone.db import Base, TransactionBackend, loaded_instance
from corestone.web import AccessCache, Grant
from taskboard.domain.models import ApiToken, Membership, User
from taskboard.services.tokens import MAX_TOKEN_LENGTH, TOKEN_PREFIX

__all__ = [
    "ACCESS_TTL_SECONDS",
    "access_for",
    "entity_tag",
    "load_membership",
    "load_principal",
    "user_from_values",
    "user_values",
]

ACCESS_TTL_SECONDS = 60.0
"""How long a lookup is kept: the bound on a change made behind the cache's back."""


def entity_tag(model: type[Base], id_: int) -> str:
    """The tag a repository write to this row invalidates: ``entity:{table}:{id}``."""
    table = model.__table__
    assert isinstance(table, Table)
    return f"entity:{table.fullname}:{id_}"


def user_values(user: User) -> dict[str, Any]:
    """The user's column values: what the principal cache keeps (never the ORM object)."""
    return {attr.key: getattr(user, attr.key) for attr in inspect(User).column_attrs}


def user_from_values(values: dict[str, Any]) -> User:
    """A ``User`` made from cached values, without a query, as the ORM makes a loaded one.

    The values go straight into the instance's state (no attribute events): every request
    builds one, and the constructor's per-attribute bookkeeping costs more than the lookup.
    """
    return loaded_instance(User, values)


async def load_principal(session: AsyncSession, wanted: str) -> Grant | None:
    """The user whose token has the digest ``wanted``; tagged with the user's row."""
    # One join, not two repository reads: this runs on every miss.
    row = (
        await session.execute(
            select(User, ApiToken.token_hash)
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(ApiToken.token_hash == wanted)
        )
    ).first()
    if row is None or not hmac.compare_digest(row[1], wanted):
        return None
    user: User = row[0]
    return Grant(user_values(user), user.id, tags=(entity_tag(User, user.id),))


async def load_membership(
    session: AsyncSession, workspace_id: int, user_id: int | str
) -> Grant | None:
    """The user's role in the workspace; tagged with the membership's row."""
    # One row by its unique key (workspace, user), the tenant column named: a repository
    # would add a count (pages) or need a signing key (cursors) for the same SELECT.
    row = (
        await session.execute(
            select(Membership.id, Membership.role).where(
                Membership.workspace_id == workspace_id, Membership.user_id == user_id
            )
        )
    ).first()
    if row is None:
        return None
    return Grant(row.role, user_id, tags=(entity_tag(Membership, row.id),))


def access_for(database: TransactionBackend) -> AccessCache:
    """taskboard's lookups on ``database`` and its cache (cheap: make one where needed)."""
    return AccessCache(
        database,
        load_principal=load_principal,
        load_membership=load_membership,
        ttl=ACCESS_TTL_SECONDS,
        token_prefix=TOKEN_PREFIX,
        max_token_length=MAX_TOKEN_LENGTH,
    )
