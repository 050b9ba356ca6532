"""Bearer tokens: random, shown once, stored only as a SHA-256 digest.

The tokens carry 256 bits of randomness, so a fast digest is enough (a slow password
hash protects guessable secrets, which these are not). Lookup is by digest through a
unique index; the stored digest is then compared in constant time.

Tokens are the one table taskboard reads without a repository: authentication joins
tokens to users in one query on every request, and replacing a label's tokens is one
DELETE by filter; a one-model repository expresses neither.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from corestone import AuthenticationError
from taskboard.domain.models import ApiToken, User

__all__ = ["TOKEN_PREFIX", "digest", "issue_token", "user_for_token"]

TOKEN_PREFIX = "tb_"  # noqa: S105 - a public prefix, not a secret
_MAX_TOKEN_LENGTH = 200


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_token(
    session: AsyncSession, user_id: int, *, label: str = "api", replace: bool = False
) -> str:
    """A new token for ``user_id``; with ``replace``, older tokens of that label stop working."""
    if replace:
        await session.execute(
            delete(ApiToken).where(ApiToken.user_id == user_id, ApiToken.label == label)
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            user_id=user_id, token_hash=digest(token), label=label, created_at=datetime.now(UTC)
        )
    )
    return token


async def user_for_token(session: AsyncSession, token: str) -> User:
    """The user a token belongs to, or AuthenticationError."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
        raise AuthenticationError("invalid bearer token")
    wanted = digest(token)
    # One join, not two repository reads: this runs on every authenticated request.
    row = (
        await session.execute(
            select(User, ApiToken.token_hash)
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(ApiToken.token_hash == wanted)
        )
    ).first()
    if row is None or not hmac.compare_digest(row[1], wanted):
        raise AuthenticationError("invalid bearer token")
    user: User = row[0]
    return user
