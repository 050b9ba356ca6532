"""How ``EmailService.send`` stores a message: on PostgreSQL, in one statement.

A send checks the suppression list, stores the row and writes its first event. As three
statements that is three round trips inside the caller's transaction, which then costs
more than twice a plain one-row insert. On PostgreSQL the three are one statement (data-
modifying CTEs): when a recipient is suppressed nothing is written and the addresses
come back, for the service's general path. Elsewhere (SQLite, in process, where a round
trip is cheap) the steps run in turn.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from corestone._extras import requires_extra
from corestone.email._keys import stored_under_key
from corestone.email.outbox import (
    EmailEventRecord,
    EmailOutboxRecord,
    EmailStatus,
    EmailSuppressionRecord,
    OutboxStore,
)

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import String, Table, bindparam, text
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["store_unless_suppressed"]

_OUTBOX: Table = EmailOutboxRecord.__table__  # type: ignore[assignment]
_EVENTS: Table = EmailEventRecord.__table__  # type: ignore[assignment]
_SUPPRESSIONS: Table = EmailSuppressionRecord.__table__  # type: ignore[assignment]
_PG = postgresql.dialect()  # type: ignore[no-untyped-call]
_ADDRESSES = postgresql.ARRAY(String(320))


def _cast(column: Any) -> str:
    """A typed parameter: in ``INSERT … SELECT`` PostgreSQL cannot infer it from the column."""
    return f"CAST(:{column.name} AS {column.type.compile(dialect=_PG)})"


# A text statement (names from the tables) is compiled once; ``INSERT … ON CONFLICT``
# made with SQLAlchemy's dialect constructs has no cache key and is compiled every time.
_STORE_UNLESS_SUPPRESSED = (
    text(
        f"WITH suppressed AS (SELECT address FROM {_SUPPRESSIONS.name} "  # noqa: S608 - names from the tables
        "WHERE address = ANY(:addresses)), "
        f"stored AS (INSERT INTO {_OUTBOX.name} ({', '.join(c.name for c in _OUTBOX.columns)}) "
        f"SELECT {', '.join(_cast(c) for c in _OUTBOX.columns)} "
        "WHERE NOT EXISTS (SELECT 1 FROM suppressed) "
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id), "
        f"event AS (INSERT INTO {_EVENTS.name} (message_id, status, at) "
        f"SELECT id, {_cast(_OUTBOX.c.status)}, {_cast(_OUTBOX.c.created_at)} FROM stored) "
        "SELECT (SELECT id FROM stored) AS id, ARRAY(SELECT address FROM suppressed) AS suppressed"
    )
    .bindparams(
        *(bindparam(c.name, type_=c.type) for c in _OUTBOX.columns),
        bindparam("addresses", type_=_ADDRESSES),
    )
    .columns(_OUTBOX.c.id, suppressed=_ADDRESSES)
)


async def store_unless_suppressed(
    store: OutboxStore,
    session: AsyncSession,
    message: Mapping[str, Any],
    recipients: Iterable[str],
    *,
    workspace_id: int | None,
    correlation_id: str | None,
) -> str | set[str]:
    """Store a queued message unless a recipient is suppressed: its id, or those addresses.

    Nothing is written when addresses come back (the caller decides what to store). An
    idempotency key already stored gives the stored id, as :meth:`OutboxStore.insert`.
    """
    wanted = sorted({a.lower() for a in recipients})
    if session.get_bind().dialect.name != "postgresql":
        suppressed = await store.suppressed_among(session, wanted)
        if suppressed:
            return suppressed
        return await store.insert(
            session, message, status=EmailStatus.QUEUED,
            workspace_id=workspace_id, correlation_id=correlation_id,
        )  # fmt: skip
    values = store.new_row(message, EmailStatus.QUEUED, workspace_id, correlation_id)
    row = (await session.execute(_STORE_UNLESS_SUPPRESSED, {**values, "addresses": wanted})).one()
    if row.suppressed:
        return set(row.suppressed)
    if row.id is not None:
        return str(row.id)
    return await stored_under_key(session, values["idempotency_key"], workspace_id)
