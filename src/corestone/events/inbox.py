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
an operator can read, replay or drop it. A body larger than the consumer's event limit
can never be an event: only its first :data:`CLIPPED_BODY_BYTES` bytes are kept, and
the reason says how large it was (a hostile sender cannot fill the table). An operator
asks for a replay from another process (``corestone events dead-letters replay``) by
setting ``replay_requested_at``; the group's running consumers pick such rows up
(:meth:`InboxStore.lock_for_replay`) and replay them through the inbox.

Inbox rows are only needed while a redelivery of their event can still arrive;
:meth:`InboxStore.prune` deletes the older ones in chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import (
        Integer,
        String,
        Table,
        Text,
        bindparam,
        delete,
        func,
        select,
        text,
        update,
    )
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Mapped, mapped_column

from corestone.db.models import Base, BigIntId, UTCDateTime, utc_now

__all__ = ["CLIPPED_BODY_BYTES", "DeadLetter", "DeadLetterRecord", "InboxRecord", "InboxStore"]

_REASON_MAX = 2000
CLIPPED_BODY_BYTES = 4096
"""What is kept of a dead letter's body that is larger than an event may be."""


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
    replay_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """Set by an operator (another process): the group's consumers replay it, then clear it."""


_INBOX: Table = InboxRecord.__table__  # type: ignore[assignment]
_DEAD: Table = DeadLetterRecord.__table__  # type: ignore[assignment]

# Text, not ``insert().on_conflict_do_nothing()``: SQLAlchemy has no cache key for the
# ON CONFLICT clause, so that statement was compiled anew for every event handled (a
# third of a consumer's CPU, measured by bench events). PostgreSQL and SQLite (3.35+)
# both read this one.
_CLAIM = text(
    "INSERT INTO corestone_events_inbox (consumer, event_id, handled_at) "
    "VALUES (:consumer, :event_id, :handled_at) "
    "ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id"
).bindparams(bindparam("handled_at", type_=_INBOX.c.handled_at.type))


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
    replay_requested_at: datetime | None = None


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd")


class InboxStore:
    """The inbox's and dead letters' statements, in a transaction the caller owns."""

    def __init__(self, *, now: Callable[[], datetime] = utc_now) -> None:
        self.now = now

    async def claim(self, session: AsyncSession, consumer: str, event_id: str) -> bool:
        """Record ``event_id`` as handled by ``consumer``; False if it already was."""
        result = await session.execute(
            _CLAIM, {"consumer": consumer, "event_id": event_id, "handled_at": self.now()}
        )
        return result.first() is not None

    async def prune(
        self, session: AsyncSession, consumer: str, *, before: datetime, limit: int
    ) -> int:
        """Delete up to ``limit`` of ``consumer``'s inbox rows handled before ``before``.

        One chunk: the caller repeats (each chunk in its own short transaction) until
        fewer than ``limit`` went, so a large backlog never holds one long lock.
        """
        chunk = (
            select(_INBOX.c.event_id)
            .where(_INBOX.c.consumer == consumer, _INBOX.c.handled_at < before)
            .limit(limit)
            .scalar_subquery()
        )
        result = await session.execute(
            delete(_INBOX).where(_INBOX.c.consumer == consumer, _INBOX.c.event_id.in_(chunk))
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

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
        max_body_bytes: int | None = None,
    ) -> None:
        """Store a delivery ``consumer`` gave up on.

        Bytes that are not UTF-8, and NUL characters (PostgreSQL's text refuses them), are
        replaced by U+FFFD: a hostile body is kept readable rather than lost. A body over
        ``max_body_bytes`` (the largest event there can be) is no event and never will
        be: its first :data:`CLIPPED_BODY_BYTES` are kept, and the reason ends with its
        real size.
        """
        if max_body_bytes is not None and len(body) > max_body_bytes:
            note = f" [body of {len(body)} bytes; the first {CLIPPED_BODY_BYTES} kept]"
            reason = reason[: _REASON_MAX - len(note)] + note
            body = body[:CLIPPED_BODY_BYTES]
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
        self,
        session: AsyncSession,
        *,
        consumer: str | None = None,
        ids: list[int] | None = None,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """Dead letters, oldest first (of one consumer, or of these ids, when given)."""
        query = select(_DEAD).order_by(_DEAD.c.id).limit(limit)
        if consumer is not None:
            query = query.where(_DEAD.c.consumer == consumer)
        if ids is not None:
            query = query.where(_DEAD.c.id.in_(ids))
        return [DeadLetter(**row._mapping) for row in await session.execute(query)]

    async def count_dead_letters(
        self, session: AsyncSession, *, consumer: str | None = None
    ) -> int:
        """How many dead letters there are (of one consumer, when given)."""
        query = select(func.count()).select_from(_DEAD)
        if consumer is not None:
            query = query.where(_DEAD.c.consumer == consumer)
        return int((await session.execute(query)).scalar_one())

    async def dead_letter_by_id(
        self, session: AsyncSession, dead_letter_id: int
    ) -> DeadLetter | None:
        """One dead letter, or None if there is none by that id."""
        row = (await session.execute(select(_DEAD).where(_DEAD.c.id == dead_letter_id))).first()
        return None if row is None else DeadLetter(**row._mapping)

    async def take_dead_letter(
        self, session: AsyncSession, dead_letter_id: int
    ) -> DeadLetter | None:
        """Delete a dead letter and return it (None if there is none by that id)."""
        result = await session.execute(
            delete(_DEAD).where(_DEAD.c.id == dead_letter_id).returning(*_DEAD.c)
        )
        row = result.first()
        return None if row is None else DeadLetter(**row._mapping)

    # -- replays asked for by another process --------------------------------------------

    async def request_replay(
        self, session: AsyncSession, *, ids: list[int] | None = None, consumer: str | None = None
    ) -> list[int]:
        """Mark dead letters for replay: these ``ids`` (of ``consumer``, when given), or
        every one of ``consumer``. Returns the ids marked.

        The consumers of each letter's group replay it at their next look
        (``replay_poll_seconds``); a letter already marked is marked again (no harm).
        """
        if ids is None and consumer is None:
            raise ValueError("request_replay: ids, a consumer, or both")
        query = update(_DEAD).values(replay_requested_at=self.now()).returning(_DEAD.c.id)
        if ids is not None:
            query = query.where(_DEAD.c.id.in_(ids))
        if consumer is not None:
            query = query.where(_DEAD.c.consumer == consumer)
        return sorted(int(row.id) for row in await session.execute(query))

    async def replay_requested(
        self, session: AsyncSession, consumer: str, *, limit: int = 100
    ) -> list[int]:
        """The ids of ``consumer``'s dead letters marked for replay, oldest first."""
        query = (
            select(_DEAD.c.id)
            .where(_DEAD.c.consumer == consumer, _DEAD.c.replay_requested_at.is_not(None))
            .order_by(_DEAD.c.id)
            .limit(limit)
        )
        return [int(row.id) for row in await session.execute(query)]

    async def lock_for_replay(
        self, session: AsyncSession, dead_letter_id: int, consumer: str, *, marked_only: bool
    ) -> DeadLetter | None:
        """Take ``consumer``'s dead letter for a replay in this transaction, or None.

        The row is locked until the transaction ends and its mark is cleared in it. On
        PostgreSQL a row another consumer is replaying right now is skipped (``SKIP
        LOCKED``: None), so two consumers of a group never replay one letter both; on
        SQLite the writers' lock already queues them, and the second finds it gone or
        unmarked. With ``marked_only``, a row nobody marked is None too.
        """
        query = select(_DEAD).where(_DEAD.c.id == dead_letter_id, _DEAD.c.consumer == consumer)
        if marked_only:
            query = query.where(_DEAD.c.replay_requested_at.is_not(None))
        row = (await session.execute(query.with_for_update(skip_locked=True))).first()
        if row is None:
            return None
        if row.replay_requested_at is not None:
            await session.execute(
                update(_DEAD).where(_DEAD.c.id == dead_letter_id).values(replay_requested_at=None)
            )
        return DeadLetter(**row._mapping)

    async def replay_failed(self, session: AsyncSession, letter: DeadLetter, reason: str) -> None:
        """A replay of ``letter`` failed: it stays, with this reason and one attempt more."""
        await session.execute(
            update(_DEAD)
            .where(_DEAD.c.id == letter.id)
            .values(reason=_text(reason)[:_REASON_MAX], attempts=letter.attempts + 1)
        )
