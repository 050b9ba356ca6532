"""Provider events that arrive before the sender has written ``sent``.

A fast provider can call its webhook before the sender's write of ``sent`` commits (the
sender writes after the provider answers; the webhook may come first). Tracking sees the
message still ``sending``, owned by its sender, and only records the event in the
history. Without this step the sender's ``sent`` would then stand for good and hide a
delivery, a bounce or a complaint. So, in the transaction that writes ``sent``, the
messages that got such events during this attempt (history rows after the attempt's own
``sending`` row) take the furthest of them.
"""

from __future__ import annotations

from collections.abc import Collection

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import Table, func, select, update
    from sqlalchemy.ext.asyncio import AsyncSession

from corestone.email.tables import DELIVERY_RANK, EmailEventRecord, EmailOutboxRecord, EmailStatus

__all__ = ["settle_early_events"]

_OUTBOX: Table = EmailOutboxRecord.__table__  # type: ignore[assignment]
_EVENTS: Table = EmailEventRecord.__table__  # type: ignore[assignment]
_REPORTED = [status.value for status, rank in DELIVERY_RANK.items() if rank > 0]


async def settle_early_events(session: AsyncSession, sent: Collection[str]) -> None:
    """Move messages just written ``sent`` on to what their provider already reported."""
    if not sent:
        return
    attempt = _EVENTS.alias("attempt")
    attempt_started = (
        select(func.max(attempt.c.id))
        .where(
            attempt.c.message_id == _EVENTS.c.message_id,
            attempt.c.status == EmailStatus.SENDING.value,
        )
        .scalar_subquery()
    )
    found = await session.execute(
        select(_EVENTS.c.message_id, _EVENTS.c.status).where(
            _EVENTS.c.message_id.in_(list(sent)),
            _EVENTS.c.status.in_(_REPORTED),
            _EVENTS.c.id > attempt_started,
        )
    )
    furthest: dict[str, EmailStatus] = {}
    for message_id, value in found:
        status = EmailStatus(value)
        current = furthest.get(message_id)
        if current is None or DELIVERY_RANK[status] > DELIVERY_RANK[current]:
            furthest[message_id] = status
    by_status: dict[EmailStatus, list[str]] = {}
    for message_id, status in furthest.items():
        by_status.setdefault(status, []).append(message_id)
    for status, ids in by_status.items():
        await session.execute(
            update(_OUTBOX)
            .where(_OUTBOX.c.id.in_(ids), _OUTBOX.c.status == EmailStatus.SENT.value)
            .values(status=status.value)
        )
