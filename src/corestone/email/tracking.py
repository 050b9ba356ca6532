"""Tracking: apply providers' delivery events to the outbox, and read a message's history.

A :class:`~corestone.email.webhooks.DeliveryEvent` (verified by the webhook classes)
changes three things, in one transaction:

- a receipt in ``corestone_email_receipts``, keyed by (provider, event id). Providers
  deliver webhooks at least once and retry on any error, so the same event arrives again;
  a receipt already there makes the whole event a no-op (idempotent, also across the
  processes that share the database, where the replay guard is per process).
- a row of the message's history in ``corestone_email_events`` (the status, the
  provider, the recipient and the provider's reason), and the message's current status.
  The status only moves forward (``sent`` → ``deferred`` → ``delivered`` → ``opened`` →
  ``clicked`` → ``bounced``/``failed`` → ``complained``): a late ``delivered`` does not
  hide a bounce. A message still ``queued`` or ``sending`` keeps its status (the sender
  owns it until ``sent`` is written; its fenced writes must still match) and only
  gets the history row; the sender's write of ``sent`` then takes the furthest such
  event of that attempt (:mod:`corestone.email._early`). An ``unknown`` one (its sender
  died during the call) moves on: the event proves the provider had it.
- for a permanent bounce or a complaint, the recipient goes on the suppression list;
  an ``unsubscribed`` event suppresses it too (reason ``manual``). Later sends to it are
  skipped and recorded as ``suppressed`` by the service and the sender.

The read side (:meth:`EmailTracker.messages`, :meth:`EmailTracker.message`) is what
``GET /api/ops/emails`` and ``corestone email list|show`` show, optionally limited to a
set of workspaces (a caller sees only the messages of workspaces they belong to).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import String, Table, func, select, update
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Mapped, mapped_column

from corestone.db.database import Database
from corestone.db.models import Base, UTCDateTime, utc_now
from corestone.email.outbox import (
    EmailEventRecord,
    EmailOutboxRecord,
    EmailStatus,
    OutboxStore,
    SuppressionReason,
    clip_reason,
)
from corestone.email.tables import DELIVERY_RANK as _RANK
from corestone.email.webhooks import DeliveryEvent
from corestone.errors import InvalidInputError

__all__ = [
    "MAX_LIMIT",
    "PENDING",
    "BulkProgress",
    "EmailReceiptRecord",
    "EmailTracker",
    "HistoryEntry",
    "MessageSummary",
    "TrackingResult",
    "parse_statuses",
]

_OUTBOX: Table = EmailOutboxRecord.__table__  # type: ignore[assignment]
_EVENTS: Table = EmailEventRecord.__table__  # type: ignore[assignment]


MAX_LIMIT: Final = 200
PENDING: Final = frozenset({EmailStatus.QUEUED.value, EmailStatus.SENDING.value})
"""The statuses a sender still owns: a bulk with none left is done."""


@dataclass(frozen=True, slots=True)
class BulkProgress:
    """How far a bulk send is: its messages by status, and whether the sender is done."""

    id: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def pending(self) -> int:
        """Messages still queued or sending."""
        return sum(n for status, n in self.counts.items() if status in PENDING)

    @property
    def done(self) -> bool:
        return self.pending == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "total": self.total, "pending": self.pending, "done": self.done,
            "counts": dict(sorted(self.counts.items())),
        }  # fmt: skip


class EmailReceiptRecord(Base):
    """``corestone_email_receipts``: each provider event applied once, by (provider, event id)."""

    __tablename__ = "corestone_email_receipts"

    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    message_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


_RECEIPTS: Table = EmailReceiptRecord.__table__  # type: ignore[assignment]


@dataclass(slots=True)
class TrackingResult:
    """What one call of :meth:`EmailTracker.apply` did, event by event."""

    applied: int = 0
    duplicates: int = 0
    """Events whose (provider, event id) was already applied: nothing changed."""
    unmatched: int = 0
    """Events naming no message of this outbox (sent by another system, or deleted)."""
    suppressed: list[str] = field(default_factory=list)
    """Addresses put on the suppression list by these events."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    status: str
    at: datetime
    provider: str | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """One outbox row as operators see it (never the bodies or attachments)."""

    id: str
    status: str
    workspace_id: int | None
    subject: str
    to: list[str]
    provider: str | None
    provider_message_id: str | None
    attempts: int
    last_error: str | None
    correlation_id: str | None
    created_at: datetime
    updated_at: datetime
    history: list[HistoryEntry] | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id, "status": self.status, "workspace_id": self.workspace_id,
            "subject": self.subject, "to": self.to, "provider": self.provider,
            "provider_message_id": self.provider_message_id, "attempts": self.attempts,
            "last_error": self.last_error, "correlation_id": self.correlation_id,
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
        }  # fmt: skip
        if self.history is not None:
            body["history"] = [
                {
                    "status": h.status,
                    "at": h.at.isoformat(),
                    "provider": h.provider,
                    "detail": h.detail,
                }
                for h in self.history
            ]
        return body


def parse_statuses(value: str | None) -> list[EmailStatus] | None:
    """``"queued,failed"`` as statuses; None for no filter; InvalidInputError naming ``status``.

    Exact names, no spaces: what taskboard's document states as the parameter's pattern.
    """
    if not value:
        return None
    found = []
    for part in value.split(","):
        try:
            found.append(EmailStatus(part))
        except ValueError:
            allowed = ", ".join(s.value for s in EmailStatus)
            raise InvalidInputError(
                f"status: {part[:40]!r} is not one of {allowed}",
                field="status",
                rule="one_of",
            ) from None
    return found


class EmailTracker:
    """Apply delivery events, and read messages and their history."""

    def __init__(self, database: Database, *, now: Callable[[], datetime] = utc_now) -> None:
        self.database = database
        self.store = OutboxStore(now=now)
        self.now = now

    async def apply(self, events: Iterable[DeliveryEvent]) -> TrackingResult:
        """Apply ``events`` in one transaction; a repeated event changes nothing."""
        result = TrackingResult()
        async with self.database.transaction() as tx:
            for event in events:
                await self._apply_one(tx.session, event, result)
        return result

    async def _apply_one(
        self, session: AsyncSession, event: DeliveryEvent, result: TrackingResult
    ) -> None:
        message_id = await self._find(session, event)
        if not await self._first_receipt(session, event, message_id):
            result.duplicates += 1
            return
        if event.recipient and (event.permanent or event.status == "unsubscribed"):
            reason = {
                "complained": SuppressionReason.COMPLAINT,
                "unsubscribed": SuppressionReason.MANUAL,
            }.get(event.status, SuppressionReason.BOUNCE)
            detail = f"{event.provider} {event.status}: {event.detail}".strip(": ")
            await self.store.suppress(session, event.recipient, reason, detail=detail)
            result.suppressed.append(event.recipient.lower())
        if message_id is None:
            result.unmatched += 1
            return
        result.applied += 1
        if event.status == "unsubscribed":
            return  # not a delivery status: the suppression is the whole effect
        status = EmailStatus(event.status)
        detail = " ".join(x for x in (event.recipient, event.detail and f"({event.detail})") if x)
        await self.store.record_events(
            session, [message_id], status, provider=event.provider, detail=detail or None
        )
        # ``unknown`` (the crash window: it may have gone out) is behind every event: a
        # provider reporting on the message settles that it did, and an operator's retry
        # of an ``unknown`` message would then be a second copy.
        behind = [s.value for s, rank in _RANK.items() if rank <= _RANK[status]]
        behind.append(EmailStatus.UNKNOWN.value)
        await session.execute(
            update(_OUTBOX)
            .where(_OUTBOX.c.id == message_id, _OUTBOX.c.status.in_(behind))
            .values(status=status.value, updated_at=self.now())
        )

    async def _find(self, session: AsyncSession, event: DeliveryEvent) -> str | None:
        """The message the event is about: by our id, else by the provider's message id when
        exactly one message has it."""
        if event.message_id:
            found = await session.execute(
                select(_OUTBOX.c.id).where(_OUTBOX.c.id == event.message_id[:36])
            )
            if (row := found.first()) is not None:
                return str(row.id)
        if event.provider_message_id:
            found = await session.execute(
                select(_OUTBOX.c.id)
                .where(_OUTBOX.c.provider_message_id == event.provider_message_id[:255])
                .limit(2)
            )
            # A provider-native batch shares one provider id among its messages: without
            # our id the event cannot say which of them it is about.
            rows = found.all()
            if len(rows) == 1:
                return str(rows[0].id)
        return None

    async def _first_receipt(
        self, session: AsyncSession, event: DeliveryEvent, message_id: str | None
    ) -> bool:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        stored = await session.execute(
            dialect.insert(_RECEIPTS)
            .values(
                provider=event.provider[:64],
                event_id=event.event_id[:255],
                message_id=message_id,
                status=event.status[:16],
                at=self.now(),
            )
            .on_conflict_do_nothing(index_elements=["provider", "event_id"])
            .returning(_RECEIPTS.c.event_id)
        )
        return stored.first() is not None

    async def messages(
        self,
        *,
        statuses: Sequence[EmailStatus] | None = None,
        workspace_ids: Collection[int] | None = None,
        limit: int = 50,
        bulk_id: str | None = None,
    ) -> list[MessageSummary]:
        """The newest messages, optionally only some statuses, workspaces, or one bulk send."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInputError(
                f"limit: must be between 1 and {MAX_LIMIT}", field="limit", rule="range"
            )
        query = select(_OUTBOX).order_by(_OUTBOX.c.created_at.desc(), _OUTBOX.c.id).limit(limit)
        if statuses is not None:
            query = query.where(_OUTBOX.c.status.in_([s.value for s in statuses]))
        if workspace_ids is not None:
            query = query.where(_OUTBOX.c.workspace_id.in_(sorted(workspace_ids)))
        if bulk_id is not None:
            query = query.where(_OUTBOX.c.bulk_id == bulk_id[:36])
        async with self.database.transaction(read_only=True) as tx:
            rows = await tx.session.execute(query)
            return [_summary(row) for row in rows]

    async def counts(
        self, *, workspace_ids: Collection[int] | None = None, bulk_id: str | None = None
    ) -> dict[str, int]:
        """How many messages are in each status, of all or of one bulk send.

        For one bulk this is one index range scan (``bulk_id, status``), cheap enough to
        poll while the bulk goes out.
        """
        query = select(_OUTBOX.c.status, func.count()).group_by(_OUTBOX.c.status)
        if workspace_ids is not None:
            query = query.where(_OUTBOX.c.workspace_id.in_(sorted(workspace_ids)))
        if bulk_id is not None:
            query = query.where(_OUTBOX.c.bulk_id == bulk_id[:36])
        async with self.database.transaction(read_only=True) as tx:
            return {str(s): int(n) for s, n in (await tx.session.execute(query)).tuples()}

    async def bulk(
        self, bulk_id: str, *, workspace_ids: Collection[int] | None = None
    ) -> BulkProgress | None:
        """The progress of one bulk send; None when it has no message (in those workspaces)."""
        counts = await self.counts(workspace_ids=workspace_ids, bulk_id=bulk_id)
        return BulkProgress(bulk_id, counts) if counts else None

    async def message(
        self, message_id: str, *, workspace_ids: Collection[int] | None = None
    ) -> MessageSummary | None:
        """One message and its history, or None (also when outside ``workspace_ids``)."""
        query = select(_OUTBOX).where(_OUTBOX.c.id == message_id[:36])
        if workspace_ids is not None:
            query = query.where(_OUTBOX.c.workspace_id.in_(sorted(workspace_ids)))
        async with self.database.transaction(read_only=True) as tx:
            row = (await tx.session.execute(query)).first()
            if row is None:
                return None
            events = await tx.session.execute(
                select(_EVENTS.c.status, _EVENTS.c.at, _EVENTS.c.provider, _EVENTS.c.detail)
                .where(_EVENTS.c.message_id == row.id)
                .order_by(_EVENTS.c.id)
            )
            history = [HistoryEntry(e.status, e.at, e.provider, e.detail) for e in events]
        summary = _summary(row)
        return MessageSummary(**{**_fields(summary), "history": history})


def _summary(row: Any) -> MessageSummary:
    stored = row.message if isinstance(row.message, dict) else {}
    to = [str(a[0]) if isinstance(a, list) and a else str(a) for a in stored.get("to", [])]
    return MessageSummary(
        id=row.id, status=row.status, workspace_id=row.workspace_id,
        subject=str(stored.get("subject", "")), to=to, provider=row.provider,
        provider_message_id=row.provider_message_id, attempts=row.attempts,
        last_error=clip_reason(row.last_error) if row.last_error else None,
        correlation_id=row.correlation_id, created_at=row.created_at, updated_at=row.updated_at,
    )  # fmt: skip


def _fields(summary: MessageSummary) -> dict[str, Any]:
    return {name: getattr(summary, name) for name in MessageSummary.__slots__}
