"""The consumers' tables: the inbox of handled event ids, and the dead letters.

``corestone_events_inbox`` has one row per (consumer, event id) handled. A consumer
inserts it in the *same transaction* as the handler's effects: if the transaction
commits, the effects and the row are both there, and a redelivery of the event finds
the row and does nothing; if it rolls back, neither is, and the redelivery does the
work. Two deliveries handled at once by two processes meet on the primary key: the
second insert waits for the first transaction and then finds the row (PostgreSQL), or
waits its turn for the write lock (SQLite).

``corestone_events_dead_letters`` keeps what a consumer gave up on, with the reason, the
attempts and the event's bytes as received (even when they are not a valid event), so
an operator can read, replay or drop it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import Integer, String, Table, Text, delete, select
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Mapped, mapped_column

from corestone.db.models import Base, BigIntId, UTCDateTime, utc_now

__all__ = ["DeadLetter", "DeadLetterRecord", "InboxRecord", "InboxStore"]

_REASON_MAX = 2000


class InboxRecord(Base):
    """``corestone_events_inbox``: the events each consumer has handled."""

    __tablename__ = "corestone_events_inbox"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    handled_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)


class DeadLetterRecord(Base):
    """``corestone_events_dead_letters``: deliveries a consumer gave up on, and why."""

    __tablename__ = "corestone_events_dead_letters"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    consumer: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    event_id: Mapped[str] = mapped_column(String(200), nullable=False)
    type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


_INBOX: Table = InboxRecord.__table__  # type: ignore[assignment]
_DEAD: Table = DeadLetterRecord.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter as stored."""

    id: int
    consumer: str
    event_id: str
    type: str | None
    body: str
    reason: str
    attempts: int
    created_at: datetime


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd")


class InboxStore:
    """The inbox's and dead letters' statements, in a transaction the caller owns."""

    def __init__(self, *, now: Callable[[], datetime] = utc_now) -> None:
        self.now = now

    async def claim(self, session: AsyncSession, consumer: str, event_id: str) -> bool:
        """Record ``event_id`` as handled by ``consumer``; False if it already was."""
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        result = await session.execute(
            dialect.insert(_INBOX)
            .values(consumer=consumer, event_id=event_id, handled_at=self.now())
            .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
            .returning(_INBOX.c.event_id)
        )
        return result.first() is not None

    async def dead_letter(
        self,
        session: AsyncSession,
        *,
        consumer: str,
        event_id: str,
        type_: str | None,
        body: bytes,
        reason: str,
        attempts: int,
    ) -> None:
        """Store a delivery ``consumer`` gave up on.

        Bytes that are not UTF-8, and NUL characters (PostgreSQL's text refuses them), are
        replaced by U+FFFD: a hostile body is kept readable rather than lost.
        """
        await session.execute(
            _DEAD.insert().values(
                consumer=consumer,
                event_id=_text(event_id)[:200],
                type=_text(type_)[:200] if type_ else None,
                body=_text(body.decode(errors="replace")),
                reason=_text(reason)[:_REASON_MAX],
                attempts=attempts,
                created_at=self.now(),
            )
        )

    async def dead_letters(
        self, session: AsyncSession, *, consumer: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters, oldest first (of one consumer, when given)."""
        query = select(_DEAD).order_by(_DEAD.c.id).limit(limit)
        if consumer is not None:
            query = query.where(_DEAD.c.consumer == consumer)
        return [DeadLetter(**row._mapping) for row in await session.execute(query)]

    async def take_dead_letter(
        self, session: AsyncSession, dead_letter_id: int
    ) -> DeadLetter | None:
        """Delete a dead letter and return it (None if there is none by that id)."""
        result = await session.execute(
            delete(_DEAD).where(_DEAD.c.id == dead_letter_id).returning(*_DEAD.c)
        )
        row = result.first()
        return None if row is None else DeadLetter(**row._mapping)
