"""The email tables: the outbox, each message's history, and the suppression list.

``corestone_email_outbox`` holds one row per message, ``corestone_email_events`` its
status history (one row per status change), ``corestone_email_suppressions`` the
addresses never to mail again. They live on corestone's ``Base.metadata``; an
application's migrations create them like its own tables (taskboard: revision ``0008``).

Their columns and constraints only; how senders claim and fence rows is in
:mod:`corestone.email.outbox`, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, Text
    from sqlalchemy.orm import Mapped, mapped_column

from corestone.db.models import Base, BigIntId, UTCDateTime

__all__ = [
    "DELIVERY_RANK",
    "EmailEventRecord",
    "EmailOutboxRecord",
    "EmailStatus",
    "EmailSuppressionRecord",
    "SuppressionReason",
]


class EmailStatus(StrEnum):
    """Where a message is (issue 13 item 7, plus ``unknown`` for the crash window)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    UNKNOWN = "unknown"
    """A provider call was in flight when its sender died: it may or may not have gone out."""


DELIVERY_RANK: Final[dict[EmailStatus, int]] = {
    EmailStatus.SENT: 0,
    EmailStatus.DEFERRED: 1,
    EmailStatus.DELIVERED: 2,
    EmailStatus.OPENED: 3,
    EmailStatus.CLICKED: 4,
    EmailStatus.BOUNCED: 5,
    EmailStatus.FAILED: 5,
    EmailStatus.COMPLAINED: 6,
}
"""How far along a sent message is; a provider's event never moves a message back."""


class SuppressionReason(StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"


def _one_of(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


_STATUS_CHECK = _one_of("status", (s.value for s in EmailStatus))


class EmailOutboxRecord(Base):
    """``corestone_email_outbox``: one row per accepted message.

    ``message`` is :meth:`EmailMessage.to_dict`. ``provider`` names the provider of the
    current (``sending``) or last attempt; ``attempts`` counts provider calls; ``bulk_id``
    names the bulk send a message is part of (``EmailService.send_bulk``).
    """

    __tablename__ = "corestone_email_outbox"
    __table_args__ = (
        CheckConstraint(_STATUS_CHECK, name="status"),
        Index("ix_corestone_email_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_corestone_email_outbox_bulk_id_status", "bulk_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[int | None] = mapped_column(BigIntId, nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    message: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fencing_token: Mapped[int] = mapped_column(Integer, nullable=False)
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    correlation_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    bulk_id: Mapped[str | None] = mapped_column(String(36), nullable=True)


class EmailEventRecord(Base):
    """``corestone_email_events``: a message's status history, one row per change."""

    __tablename__ = "corestone_email_events"
    __table_args__ = (CheckConstraint(_STATUS_CHECK, name="status"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(
        String(36),
        ForeignKey("corestone_email_outbox.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class EmailSuppressionRecord(Base):
    """``corestone_email_suppressions``: addresses (lower-cased) later sends skip."""

    __tablename__ = "corestone_email_suppressions"
    __table_args__ = (
        CheckConstraint(_one_of("reason", (r.value for r in SuppressionReason)), name="reason"),
    )

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
