"""The alert delivery tables: state history, send claims, notifications, silences.

- ``corestone_alert_history``: one row per :class:`~.model.Transition` (an alert that
  changed state), whichever process evaluated it.
- ``corestone_alert_sends``: one row per notification of a group, keyed by
  (``group_key``, ``seq``). Inserting it is the claim: every process that decides a group
  is due tries ``INSERT … ON CONFLICT DO NOTHING`` with the next ``seq`` after the last
  one it read, and only the process whose row went in sends.
- ``corestone_alert_notifications``: one row per (send, channel): status
  ``sending`` → ``sent`` | ``failed``, or ``silenced``; attempts and the last error.
- ``corestone_alert_silences``: matchers and the window they apply in.

They live on corestone's ``Base.metadata``; an application's migrations create them
(taskboard: revision ``0016``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import JSON, CheckConstraint, Float, Index, Integer, String, Text
    from sqlalchemy.orm import Mapped, mapped_column

from corestone.db.models import Base, BigIntId, UTCDateTime

__all__ = [
    "AlertHistoryRecord",
    "AlertNotificationRecord",
    "AlertSendRecord",
    "AlertSilenceRecord",
    "NotificationStatus",
]


class NotificationStatus(StrEnum):
    """Where one channel's copy of a notification is."""

    SENDING = "sending"
    """Claimed and being sent; a row left here means its process died mid-send."""
    SENT = "sent"
    FAILED = "failed"
    SILENCED = "silenced"


_STATUS_CHECK = "status IN ({})".format(", ".join(repr(s.value) for s in NotificationStatus))


class AlertHistoryRecord(Base):
    """``corestone_alert_history``: every state change of every alert."""

    __tablename__ = "corestone_alert_history"
    __table_args__ = (
        Index("ix_corestone_alert_history_at", "at"),
        Index("ix_corestone_alert_history_fingerprint_at", "fingerprint", "at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    rule: Mapped[str] = mapped_column(String(200), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(32), nullable=False)
    previous: Mapped[str] = mapped_column(String(16), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class AlertSendRecord(Base):
    """``corestone_alert_sends``: the claim of one notification of one group."""

    __tablename__ = "corestone_alert_sends"
    __table_args__ = (Index("ix_corestone_alert_sends_claimed_at", "claimed_at"),)

    group_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    content: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    claimed_by: Mapped[str] = mapped_column(String(64), nullable=False)


class AlertNotificationRecord(Base):
    """``corestone_alert_notifications``: one channel's copy of one send."""

    __tablename__ = "corestone_alert_notifications"
    __table_args__ = (
        CheckConstraint(_STATUS_CHECK, name="status"),
        Index("ix_corestone_alert_notifications_created_at", "created_at"),
        Index("ix_corestone_alert_notifications_group_key_seq", "group_key", "seq"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    group_key: Mapped[str] = mapped_column(String(32), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    channel: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    alert_status: Mapped[str] = mapped_column(String(16), nullable=False)
    group_labels: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    alerts: Mapped[int] = mapped_column(Integer, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class AlertSilenceRecord(Base):
    """``corestone_alert_silences``: matchers, the window they apply in, who and why."""

    __tablename__ = "corestone_alert_silences"
    __table_args__ = (Index("ix_corestone_alert_silences_ends_at", "ends_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    matchers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    comment: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
