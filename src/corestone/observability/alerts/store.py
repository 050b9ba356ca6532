"""The delivery's database work: history rows, send claims, notification rows.

Every function runs in a session the caller owns. :func:`claim` is the one place that
decides which process sends a group's notification: ``INSERT … ON CONFLICT DO NOTHING``
on (``group_key``, ``seq``), the same statement on PostgreSQL and SQLite; the process
whose row went in writes one notification row per channel (``sending``, or ``silenced``)
in the same transaction, and only it sends. A process that dies after the claim leaves
its rows ``sending``: visible, and never sent twice.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import Table, delete, insert, select, update
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncSession

from corestone.observability.alerts.grouping import GroupStatus, LastSend
from corestone.observability.alerts.model import Transition
from corestone.observability.alerts.tables import (
    AlertHistoryRecord,
    AlertNotificationRecord,
    AlertSendRecord,
    AlertSilenceRecord,
    NotificationStatus,
)

__all__ = [
    "PROCESS_ID",
    "Claim",
    "HistoryEntry",
    "NotificationEntry",
    "claim",
    "finish",
    "history",
    "last_send",
    "prune",
    "recent_notifications",
    "record_transitions",
]

PROCESS_ID: Final = f"{socket.gethostname()[:40]}:{os.getpid()}"
"""Who claimed a send (host and pid), stored on the claim for operators."""

_HISTORY: Table = AlertHistoryRecord.__table__  # type: ignore[assignment]
_SENDS: Table = AlertSendRecord.__table__  # type: ignore[assignment]
_NOTES: Table = AlertNotificationRecord.__table__  # type: ignore[assignment]
_SILENCES: Table = AlertSilenceRecord.__table__  # type: ignore[assignment]
_ERROR_MAX: Final = 500


async def record_transitions(
    session: AsyncSession, transitions: Sequence[Transition], at: datetime
) -> None:
    """One history row per transition (nothing for an empty list)."""
    if not transitions:
        return
    rows = [
        {
            "at": at,
            "rule": t.alert.rule[:200],
            "fingerprint": t.alert.fingerprint,
            "previous": t.previous.value,
            "state": t.alert.state.value,
            "value": t.alert.value,
            "labels": dict(t.alert.labels),
            "annotations": dict(t.alert.annotations),
        }
        for t in transitions
    ]
    await session.execute(insert(_HISTORY), rows)


async def last_send(session: AsyncSession, group_key: str) -> LastSend | None:
    """The newest claim of ``group_key``, or None if it was never sent."""
    row = (
        await session.execute(
            select(_SENDS)
            .where(_SENDS.c.group_key == group_key)
            .order_by(_SENDS.c.seq.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    return LastSend(row.seq, row.content, GroupStatus(row.status), row.claimed_at)


@dataclass(frozen=True, slots=True)
class Claim:
    """A won claim: the notification row id of each channel."""

    group_key: str
    seq: int
    rows: Mapping[str, int]


async def claim(
    session: AsyncSession,
    *,
    group_key: str,
    seq: int,
    content: str,
    status: GroupStatus,
    group_labels: Mapping[str, str],
    alerts: int,
    channels: Sequence[str],
    now: datetime,
) -> Claim | None:
    """Claim send ``seq`` of ``group_key``; its rows if this call won, None if another did."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(_SENDS)
        .values(
            group_key=group_key,
            seq=seq,
            content=content,
            status=status.value,
            claimed_at=now,
            claimed_by=PROCESS_ID,
        )
        .on_conflict_do_nothing(index_elements=["group_key", "seq"])
        .returning(_SENDS.c.seq)
    )
    if (await session.execute(statement)).first() is None:
        return None
    silenced = status is GroupStatus.SILENCED
    rows: dict[str, int] = {}
    for channel in channels:
        values = {
            "group_key": group_key,
            "seq": seq,
            "channel": channel,
            "status": (NotificationStatus.SILENCED if silenced else NotificationStatus.SENDING),
            "alert_status": GroupStatus.FIRING if silenced else status.value,
            "group_labels": dict(group_labels),
            "alerts": alerts,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        inserted = insert(_NOTES).values(**values).returning(_NOTES.c.id)
        rows[channel] = int((await session.execute(inserted)).scalar_one())
    return Claim(group_key, seq, rows)


async def finish(
    session: AsyncSession,
    row_id: int,
    *,
    status: NotificationStatus,
    attempts: int,
    error: str | None,
    now: datetime,
) -> None:
    """Record how one channel's send ended."""
    await session.execute(
        update(_NOTES)
        .where(_NOTES.c.id == row_id)
        .values(
            status=status.value,
            attempts=attempts,
            error=None if error is None else error[:_ERROR_MAX],
            updated_at=now,
        )
    )


@dataclass(frozen=True, slots=True)
class NotificationEntry:
    """One channel's copy of one send, as the API and the dashboard show it."""

    id: int
    group_key: str
    seq: int
    channel: str
    status: str
    alert_status: str
    group_labels: Mapping[str, str]
    alerts: int
    attempts: int
    error: str | None
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group_key": self.group_key,
            "seq": self.seq,
            "channel": self.channel,
            "status": self.status,
            "alert_status": self.alert_status,
            "group_labels": dict(self.group_labels),
            "alerts": self.alerts,
            "attempts": self.attempts,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


async def recent_notifications(
    session: AsyncSession, *, limit: int = 50
) -> list[NotificationEntry]:
    """The newest notification rows first."""
    query = select(_NOTES).order_by(_NOTES.c.id.desc()).limit(limit)
    return [
        NotificationEntry(
            id=row.id,
            group_key=row.group_key,
            seq=row.seq,
            channel=row.channel,
            status=row.status,
            alert_status=row.alert_status,
            group_labels=dict(row.group_labels),
            alerts=row.alerts,
            attempts=row.attempts,
            error=row.error,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in await session.execute(query)
    ]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One stored state change."""

    at: datetime
    rule: str
    fingerprint: str
    previous: str
    state: str
    value: float
    labels: Mapping[str, str]

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "rule": self.rule,
            "fingerprint": self.fingerprint,
            "previous": self.previous,
            "state": self.state,
            "value": self.value,
            "labels": dict(self.labels),
        }


async def history(
    session: AsyncSession, *, limit: int = 100, rule: str | None = None
) -> list[HistoryEntry]:
    """The newest state changes first (of ``rule`` only, if given)."""
    query = select(_HISTORY).order_by(_HISTORY.c.id.desc()).limit(limit)
    if rule is not None:
        query = query.where(_HISTORY.c.rule == rule)
    return [
        HistoryEntry(
            row.at, row.rule, row.fingerprint, row.previous, row.state, row.value, dict(row.labels)
        )
        for row in await session.execute(query)
    ]


async def prune(session: AsyncSession, *, before: datetime) -> int:
    """Delete history, sends, notifications and ended silences older than ``before``.

    A group sent nothing since ``before`` loses its claims and starts again at ``seq`` 1,
    which is safe: no process can hold a newer claim of it. Returns the rows deleted.
    """
    deleted = 0
    for statement in (
        delete(_HISTORY).where(_HISTORY.c.at < before),
        delete(_NOTES).where(_NOTES.c.created_at < before),
        delete(_SENDS).where(_SENDS.c.claimed_at < before),
        delete(_SILENCES).where(_SILENCES.c.ends_at < before),
    ):
        result = await session.execute(statement)
        deleted += int(getattr(result, "rowcount", 0) or 0)
    return deleted
