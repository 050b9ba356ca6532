"""The audit log: who changed which row, how, from what to what, in which request.

Repositories of models with :class:`~corestone.db.models.AuditedMixin` write one
:class:`AuditEntry` per changed row, in the same transaction as the change — so the log
and the data commit or roll back together, including inside a rolled-back savepoint.
A bulk operation writes all of its entries with one multi-row INSERT.

``changes`` maps each changed field to ``{"before": …, "after": …}`` (JSON-safe values:
datetimes as ISO 8601 strings, decimals and UUIDs as strings); a create has ``before``
``None`` everywhere, a purge has ``after`` ``None``. Fields in ``__audit_exclude__`` are
recorded as changed, with both values ``"<redacted>"``.

The table is ``corestone_audit_log`` on corestone's ``Base.metadata``; an application's
migrations create it like any of its own tables.
"""

from __future__ import annotations

import base64
import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import JSON, Index, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from corestone import context
from corestone.db.models import Base, BigIntId, UTCDateTime, utc_now
from corestone.db.transactions import Transaction
from corestone.errors import InvalidInputError

__all__ = [
    "REDACTED",
    "AuditAction",
    "AuditEntry",
    "audit_entries",
    "audit_table",
    "audit_value",
    "write_audit",
]

AuditAction = Literal["create", "update", "delete", "restore", "purge"]

REDACTED = "<redacted>"

_MAX_LIMIT = 500


class AuditEntry(Base):
    """One change to one row: the ``corestone_audit_log`` table."""

    __tablename__ = "corestone_audit_log"
    __table_args__ = (Index("ix_corestone_audit_log_workspace_id_id", "workspace_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utc_now)
    entity: Mapped[str] = mapped_column(String(100), nullable=False)
    entity_id: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    workspace_id: Mapped[int | None] = mapped_column(BigIntId, nullable=True)
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # As long as the longest X-Request-ID the middleware accepts: the row, the response
    # header and the log lines carry the same id.
    correlation_id: Mapped[str | None] = mapped_column(
        String(context.MAX_CORRELATION_ID_LENGTH), nullable=True
    )

    def as_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data (the shape taskboard's audit endpoint returns)."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "entity": self.entity,
            "entity_id": self.entity_id,
            "action": self.action,
            "actor_id": self.actor_id,
            "workspace_id": self.workspace_id,
            "changes": self.changes,
            "correlation_id": self.correlation_id,
        }


_TABLE: Table = AuditEntry.__table__  # type: ignore[assignment]


def audit_table() -> Table:
    """The ``corestone_audit_log`` table, for statements that write entries in SQL."""
    return _TABLE


def audit_value(value: Any) -> Any:
    """``value`` as something JSON can hold, without losing what it said."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return audit_value(value.value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): audit_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [audit_value(v) for v in value]
    return str(value)


def _int_or_none(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


async def write_audit(
    session: AsyncSession,
    *,
    entity: str,
    action: AuditAction,
    rows: Iterable[tuple[object, object, Mapping[str, Mapping[str, Any]]]],
) -> int:
    """Insert one entry per ``(entity_id, workspace_id, changes)`` with a single INSERT.

    Actor and correlation id come from :mod:`corestone.context`. Returns the number of
    entries written (0 writes nothing and costs no round trip).
    """
    at = utc_now()
    actor = context.actor_id()
    correlation = context.correlation_id()
    values = [
        {
            "at": at,
            "entity": entity,
            "entity_id": str(entity_id),
            "action": action,
            "actor_id": actor[:64] if actor else None,
            "workspace_id": _int_or_none(workspace),
            "changes": dict(changes),
            "correlation_id": (
                correlation[: context.MAX_CORRELATION_ID_LENGTH] if correlation else None
            ),
        }
        for entity_id, workspace, changes in rows
    ]
    if not values:
        return 0
    # Core insert on the table: executemany / insertmanyvalues batches, no ORM objects.
    await session.execute(insert(_TABLE), values[0] if len(values) == 1 else values)
    return len(values)


async def audit_entries(
    session_or_tx: AsyncSession | Transaction,
    *,
    workspace_id: int | str,
    limit: int = 50,
    before_id: int | None = None,
    entity: str | None = None,
    entity_id: str | int | None = None,
) -> Sequence[AuditEntry]:
    """A workspace's audit log, newest first; page on with ``before_id=entries[-1].id``.

    ``limit`` must be 1..500 (else :class:`~corestone.errors.InvalidInputError`).
    Always scoped by ``workspace_id``: there is no way to read another tenant's log here.
    """
    session = session_or_tx.session if isinstance(session_or_tx, Transaction) else session_or_tx
    if isinstance(limit, bool) or not 1 <= limit <= _MAX_LIMIT:
        raise InvalidInputError(f"limit must be 1..{_MAX_LIMIT}", field="limit", rule="range")
    workspace = _int_or_none(workspace_id)
    if workspace is None:
        raise InvalidInputError("workspace id must be an integer", field="workspace_id")
    stmt = select(AuditEntry).where(AuditEntry.workspace_id == workspace)
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    if entity is not None:
        stmt = stmt.where(AuditEntry.entity == entity)
    if entity_id is not None:
        stmt = stmt.where(AuditEntry.entity_id == str(entity_id))
    stmt = stmt.order_by(AuditEntry.id.desc()).limit(limit)
    return list(await session.scalars(stmt))
