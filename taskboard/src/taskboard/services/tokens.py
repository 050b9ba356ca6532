"""Bearer tokens: random, shown once, stored only as a SHA-256 digest.

The tokens carry 256 bits of randomness, so a fast digest is enough (a slow password
hash protects guessable secrets, which these are not). Lookup is by digest through a
unique index; the stored digest is then compared in constant time.

Tokens are the one table taskboard reads without a repository: authentication joins
tokens to users in one query (``services.access``), and replacing or revoking a label's
tokens is one DELETE by filter that returns the digests it removed; a one-model
repository expresses neither. Every token removed is dropped from the principal cache
after commit, on every instance.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete

from corestone.db import Transaction
from corestone.web import forget_access_after_commit, token_digest
from taskboard.domain.models import ApiToken, TokenRole

__all__ = [
    "MAX_TOKEN_LENGTH",
    "TOKEN_PREFIX",
    "digest",
    "issue_token",
    "revoke_tokens",
]

TOKEN_PREFIX = "tb_"  # noqa: S105 - a public prefix, not a secret
MAX_TOKEN_LENGTH = 200


def digest(token: str) -> str:
    """The SHA-256 hex digest a token is stored (and cached) under."""
    return token_digest(token)


async def issue_token(
    tx: Transaction,
    user_id: int,
    *,
    label: str = "api",
    replace: bool = False,
    role: TokenRole = TokenRole.USER,
) -> str:
    """A new token for ``user_id``; with ``replace``, older tokens of that label stop working.

    ``role`` OPERATOR makes a token that may also read the operations dashboard; it is
    only ever minted from the command line (``taskboard token create --operator``).
    """
    if replace:
        await revoke_tokens(tx, user_id, label=label)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    tx.session.add(
        ApiToken(
            user_id=user_id,
            token_hash=digest(token),
            label=label,
            created_at=datetime.now(UTC),
            role=role.value,
        )
    )
    return token


async def revoke_tokens(tx: Transaction, user_id: int, *, label: str | None = None) -> int:
    """Delete the user's tokens (of ``label``, or all); they stop working on every instance.

    Returns how many were revoked. The cached principals go once ``tx`` commits.
    """
    stmt = delete(ApiToken).where(ApiToken.user_id == user_id)
    if label is not None:
        stmt = stmt.where(ApiToken.label == label)
    revoked: Sequence[str] = (await tx.session.scalars(stmt.returning(ApiToken.token_hash))).all()
    forget_access_after_commit(tx, tokens=revoked)
    return len(revoked)
