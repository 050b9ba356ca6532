"""An idempotency key belongs to the workspace that first used it.

Keys are unique across the outbox (one column, one unique index). Without this check a
second workspace sending with a key the first already used would get the first's
message id back, and its own mail would silently never go out (and it could learn the
other's id). It is refused instead: a ``ConflictError`` that rolls its transaction back.
"""

from __future__ import annotations

from collections.abc import Collection

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import Table, select
    from sqlalchemy.ext.asyncio import AsyncSession

from corestone.email.tables import EmailOutboxRecord
from corestone.errors import ConflictError

__all__ = ["check_keys_owned", "stored_under_key"]

_OUTBOX: Table = EmailOutboxRecord.__table__  # type: ignore[assignment]


async def stored_under_key(session: AsyncSession, key: str, workspace_id: int | None) -> str:
    """The id of the message already stored under ``key``, if it is this workspace's."""
    row = (
        await session.execute(
            select(_OUTBOX.c.id, _OUTBOX.c.workspace_id).where(_OUTBOX.c.idempotency_key == key)
        )
    ).one()
    _refuse_foreign(row.workspace_id, workspace_id)
    return str(row.id)


async def check_keys_owned(
    session: AsyncSession, keys: Collection[str], workspace_id: int | None
) -> None:
    """Refuse when any of ``keys`` is stored for another workspace (a bulk sent again)."""
    if not keys:
        return
    owners = await session.execute(
        select(_OUTBOX.c.workspace_id)
        .where(_OUTBOX.c.idempotency_key.in_(list(keys)))
        .where(_OUTBOX.c.workspace_id.is_distinct_from(workspace_id))
        .limit(1)
    )
    for (owner,) in owners:
        _refuse_foreign(owner, workspace_id)


def _refuse_foreign(owner: int | None, workspace_id: int | None) -> None:
    if owner != workspace_id:
        raise ConflictError(
            "idempotency_key: already used by another workspace; choose a key of your own"
        )
