"""The events outbox: the table events are written to with the change, and the relay's writes.

``corestone_events_outbox`` lives on corestone's ``Base.metadata``, so an application's
migrations create it like its own tables. Each row is one event: ``seq`` (the insert
order, for ordering only), the event's id, type and aggregate, its bytes (``body``,
exactly as :meth:`DomainEvent.to_json` made them), and the relay's bookkeeping.

How a row moves, and why no event can be skipped (ADR 0031 has the whole argument):

- A writer inserts it ``pending`` inside its own transaction. Until that commits, no
  relay can see it; if it rolls back, the row never existed.
- A relay *claims* pending rows by their **status**, never by "rows after the last
  position I read": a row whose transaction commits late is still ``pending`` when it
  becomes visible, and the next claim takes it. Claims are serialised across relays (a
  transaction-level advisory lock on PostgreSQL; SQLite has one writer at a time), each
  sets a lease and bumps ``fencing_token``, and a row is claimable only when no earlier
  row of its aggregate is held by a live lease or waiting out a backoff, so two relays
  never publish one aggregate's events at once or out of order.
- After publishing, the relay marks its rows ``sent`` (fenced on its lease and token)
  and gives them their ``position``: assigned at that moment, under the same lock, as
  the next numbers after the largest. Positions therefore become visible in increasing
  order, so a reader of "sent events after position P" (a replay) skips nothing either.
- A publish that fails gives the rows back with a backoff. A relay that dies between
  publishing and marking leaves its lease to expire; another relay publishes the rows
  again (consumers de-duplicate by event id).
- ``sent`` rows are deleted once older than the retention (:meth:`OutboxStore.prune`),
  all but the one with the largest position, which the next positions count on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import (
        ARRAY,
        BigInteger,
        CheckConstraint,
        Index,
        Integer,
        String,
        Table,
        Text,
        and_,
        any_,
        bindparam,
        case,
        delete,
        func,
        insert,
        or_,
        select,
        text,
        tuple_,
        update,
    )
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Mapped, mapped_column

from corestone.db.models import Base, BigIntId, UTCDateTime, utc_now
from corestone.events.event import DomainEvent

__all__ = [
    "NOTIFY_CHANNEL",
    "ClaimedEvent",
    "EventOutboxRecord",
    "OutboxStore",
    "SentEvent",
]

NOTIFY_CHANNEL = "corestone_events"
"""The PostgreSQL channel a recording transaction notifies (delivered at its commit)."""

_LOCK_KEY = 0x636F_7265_7374_6E65  # "corestne": the advisory lock that serialises claims and marks
_ERROR_MAX = 2000


class EventOutboxRecord(Base):
    """``corestone_events_outbox``: one row per recorded event (see the module doc)."""

    __tablename__ = "corestone_events_outbox"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sent')", name="status"),
        Index("ix_corestone_events_outbox_status_seq", "status", "seq"),
        Index("ix_corestone_events_outbox_aggregate", "aggregate_type", "aggregate_id", "seq"),
        Index("ix_corestone_events_outbox_position", "position", unique=True),
        Index("ix_corestone_events_outbox_status_sent_at", "status", "sent_at"),
        Index("ix_corestone_events_outbox_workspace_position", "workspace_id", "position"),
    )

    seq: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)
    type: Mapped[str] = mapped_column(String(200), nullable=False)
    aggregate_type: Mapped[str] = mapped_column(String(100), nullable=False)
    aggregate_id: Mapped[str] = mapped_column(String(200), nullable=False)
    workspace_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fencing_token: Mapped[int] = mapped_column(Integer, nullable=False)
    position: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


_T: Table = EventOutboxRecord.__table__  # type: ignore[assignment]
_INSERT_NOTIFY = insert(_T).returning(func.pg_notify(NOTIFY_CHANNEL, ""))

# PostgreSQL: the claims' and marks' lock, and (local to the transaction) no sorts, no
# bitmap scans and no sequential scans, so the claim walks the ``status, seq`` index and
# stops at its limit, and the batch's rows are found by key, whatever the statistics say.
# On a young table (none yet) the planner sorted every pending row, and scanned the
# whole table (sent rows and dead versions included) for the 500 rows of a batch.
_LOCK_AND_PLAN = text(
    f"SELECT pg_advisory_xact_lock({_LOCK_KEY}), "
    "set_config('enable_sort', 'off', true), set_config('enable_bitmapscan', 'off', true), "
    "set_config('enable_seqscan', 'off', true)"
)

# PostgreSQL: mark a batch sent in one statement of one text whatever its size (the rows
# as two arrays, positions from the largest so far), where the IN pairs and a CASE per
# row built ~1,500 bound parameters for a batch of 500 and took a second round trip.
# Fenced by owner and token: a row another relay took over (token bumped) or marked (no
# owner) is left. No status condition, which made the planner, without statistics, scan
# every pending row through the status index instead of looking the batch up by key.
_MARK_SENT = text(
    f"UPDATE {_T.name} SET status = 'sent', sent_at = :now, "  # noqa: S608 - the table's name
    f"position = (SELECT coalesce(max(position), 0) FROM {_T.name}) "
    "+ array_position(CAST(:seqs AS BIGINT[]), seq), "
    "lease_owner = NULL, lease_expires_at = NULL, last_error = NULL "
    "WHERE seq = ANY(CAST(:seqs AS BIGINT[])) AND lease_owner = :owner "
    "AND fencing_token = "
    "(CAST(:tokens AS INTEGER[]))[array_position(CAST(:seqs AS BIGINT[]), seq)] "
    "RETURNING seq"
).bindparams(
    bindparam("now", type_=UTCDateTime()),
    bindparam("seqs", type_=ARRAY(BigInteger())),
    bindparam("tokens", type_=ARRAY(Integer())),
    bindparam("owner", type_=String()),
)


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """A row a relay holds: what to publish, and the token that fences its writes."""

    seq: int
    id: str
    type: str
    aggregate: str
    body: str
    token: int
    attempts: int


@dataclass(frozen=True, slots=True)
class SentEvent:
    """A published event as the replay window holds it."""

    position: int
    body: str


class OutboxStore:
    """The outbox's statements; each method runs in a transaction the caller owns."""

    def __init__(self, *, now: Callable[[], datetime] = utc_now) -> None:
        self.now = now

    async def insert(
        self, session: AsyncSession, events: Sequence[tuple[DomainEvent, bytes]]
    ) -> None:
        """Write ``events`` (each with its bytes) as pending rows, in order.

        On PostgreSQL the same statement notifies :data:`NOTIFY_CHANNEL`; the notification
        is delivered when (and only if) the transaction commits.
        """
        if not events:
            return
        now = self.now()
        rows = [
            {
                "id": str(event.id), "type": event.type, "aggregate_type": event.aggregate_type,
                "aggregate_id": event.aggregate_id, "workspace_id": event.workspace_id,
                "body": data.decode(), "status": "pending", "attempts": 0, "next_attempt_at": now,
                "lease_owner": None, "lease_expires_at": None, "fencing_token": 0,
                "position": None, "last_error": None, "created_at": now, "sent_at": None,
            }
            for event, data in events
        ]  # fmt: skip
        if session.get_bind().dialect.name == "postgresql":
            # One round trip and one statement compiled once: every row's RETURNING calls
            # pg_notify, and PostgreSQL folds a transaction's identical notifications into
            # one. (A multi-VALUES insert has no cache key: it was compiled anew on every
            # call, costing more than the write it was added to.)
            await session.execute(_INSERT_NOTIFY, rows)
        else:
            await session.execute(insert(_T), rows)

    @staticmethod
    async def _serialise(session: AsyncSession) -> bool:
        """Hold the outbox lock until this transaction ends (SQLite: already the only writer).

        Returns True on PostgreSQL, where the same round trip also makes the planner walk
        the indexes in order for the rest of this transaction (see :meth:`claim`).
        """
        if session.get_bind().dialect.name != "postgresql":
            return False
        await session.execute(_LOCK_AND_PLAN)
        return True

    async def claim(
        self, session: AsyncSession, *, owner: str, limit: int, lease: timedelta
    ) -> list[ClaimedEvent]:
        """Lease up to ``limit`` pending rows, oldest first.

        A row is left while an earlier row of its aggregate is leased or backing off.
        The claim walks the pending rows in ``seq`` order (the ``status, seq`` index), a
        page of narrow rows at a time, and picks in Python: every row before a candidate
        is seen before it, so "an earlier row of its aggregate is held" is decided
        exactly. What it reads is the rows up to the ``limit``-th claimable one, not the
        whole backlog and not the aggregate's sent history, and at most
        ``max(20 * limit, 10_000)`` rows: when that many at the front are all held or
        backing off (a broker away for a while), the rows behind them wait for them.
        Then one ``UPDATE`` by primary key takes the picked rows. (The previous single
        statement, ``NOT EXISTS`` an earlier held row of the aggregate, was planned on a
        young table, without statistics, as a sort of every pending row, each checked
        against its aggregate's earlier rows: ~200 ms a batch of 500 at a backlog of 10,000.)
        """
        postgres = await self._serialise(session)
        now = self.now()
        chosen = await self._pick(session, now, limit)
        if not chosen:
            return []
        picked = (
            _T.c.seq == any_(bindparam("seqs", chosen, type_=ARRAY(BigInteger())))
            if postgres
            else _T.c.seq.in_(chosen)
        )
        rows = await session.execute(
            update(_T)
            # By primary key alone: under the lock no other claim or mark runs, so what
            # was picked is still pending and unleased (a late ``release`` by a relay whose
            # lease ran out only postpones a row: publishing it now is as good). A status
            # condition here let the planner, without statistics, scan every pending row.
            .where(picked)
            .values(
                lease_owner=owner,
                lease_expires_at=now + lease,
                fencing_token=_T.c.fencing_token + 1,
            )
            .returning(
                _T.c.seq,
                _T.c.id,
                _T.c.type,
                _T.c.aggregate_type,
                _T.c.aggregate_id,
                _T.c.body,
                _T.c.fencing_token,
                _T.c.attempts,
            )
        )
        claimed = [
            ClaimedEvent(
                r.seq,
                r.id,
                r.type,
                f"{r.aggregate_type}:{r.aggregate_id}",
                r.body,
                r.fencing_token,
                r.attempts,
            )
            for r in rows
        ]
        return sorted(claimed, key=lambda c: c.seq)

    @staticmethod
    async def _pick(session: AsyncSession, now: datetime, limit: int) -> list[int]:
        """The seqs of up to ``limit`` claimable rows, oldest first (see :meth:`claim`)."""
        # A page is the batch and some slack (rows of held aggregates are passed over).
        page, most = max(limit + 100, 200), max(20 * limit, 10_000)
        held = or_(_T.c.lease_expires_at >= now, _T.c.next_attempt_at > now)
        chosen: list[int] = []
        blocked: set[tuple[str, str]] = set()
        after, read = 0, 0
        while len(chosen) < limit and read < most:
            rows = (
                await session.execute(
                    select(_T.c.seq, _T.c.aggregate_type, _T.c.aggregate_id, held.label("held"))
                    .where(_T.c.status == "pending", _T.c.seq > after)
                    .order_by(_T.c.seq)
                    .limit(page)
                )
            ).all()
            for seq, aggregate_type, aggregate_id, is_held in rows:
                key = (aggregate_type, aggregate_id)
                if is_held:
                    blocked.add(key)
                elif key not in blocked:
                    chosen.append(seq)
                    if len(chosen) == limit:
                        break
            if len(rows) < page:
                break
            after, read = rows[-1][0], read + len(rows)
        return chosen

    def _held(self, rows: Sequence[ClaimedEvent], owner: str) -> Any:
        return and_(
            _T.c.seq.in_([r.seq for r in rows]),
            tuple_(_T.c.seq, _T.c.fencing_token).in_([(r.seq, r.token) for r in rows]),
            _T.c.lease_owner == owner,
            _T.c.status == "pending",
        )

    async def mark_sent(
        self, session: AsyncSession, rows: Sequence[ClaimedEvent], *, owner: str
    ) -> set[int]:
        """Mark ``rows`` sent with the next positions (fenced); return the seqs still held."""
        if not rows:
            return set()
        if await self._serialise(session):
            result = await session.execute(
                _MARK_SENT,
                {
                    "seqs": [r.seq for r in rows],
                    "tokens": [r.token for r in rows],
                    "owner": owner,
                    "now": self.now(),
                },
            )
            return {row.seq for row in result}
        last = (await session.execute(select(func.coalesce(func.max(_T.c.position), 0)))).scalar()
        positions = {r.seq: int(last or 0) + i for i, r in enumerate(rows, start=1)}
        result = await session.execute(
            update(_T)
            .where(self._held(rows, owner))
            .values(
                status="sent",
                sent_at=self.now(),
                position=case(positions, value=_T.c.seq),
                lease_owner=None,
                lease_expires_at=None,
                last_error=None,
            )
            .returning(_T.c.seq)
        )
        return {row.seq for row in result}

    async def release(
        self,
        session: AsyncSession,
        rows: Sequence[ClaimedEvent],
        *,
        owner: str,
        delay: timedelta,
        error: str,
    ) -> set[int]:
        """Give ``rows`` back after a failed publish, due again after ``delay`` (fenced)."""
        if not rows:
            return set()
        result = await session.execute(
            update(_T)
            .where(self._held(rows, owner))
            .values(
                lease_owner=None,
                lease_expires_at=None,
                attempts=_T.c.attempts + 1,
                next_attempt_at=self.now() + delay,
                last_error=error[:_ERROR_MAX],
            )
            .returning(_T.c.seq)
        )
        return {row.seq for row in result}

    async def prune(self, session: AsyncSession, *, older_than: timedelta, limit: int) -> int:
        """Delete up to ``limit`` sent rows sent more than ``older_than`` ago; return how many.

        The row with the largest position is kept whatever its age: the next positions
        are numbered from it (:meth:`mark_sent`), so deleting it (an outbox idle for
        longer than the retention) started them again from 1, and a replay reader
        resuming after the last position it saw skipped every new event below it.
        """
        cutoff = self.now() - older_than
        newest = select(func.max(_T.c.position)).scalar_subquery()
        old = (
            select(_T.c.seq)
            .where(_T.c.status == "sent", _T.c.sent_at < cutoff, _T.c.position < newest)
            .order_by(_T.c.sent_at)
            .limit(limit)
        )
        result = await session.execute(
            delete(_T).where(_T.c.seq.in_(old.scalar_subquery())).returning(_T.c.seq)
        )
        return len(result.all())

    async def backlog(self, session: AsyncSession) -> tuple[int, datetime | None]:
        """How many events wait to be published, and when the oldest was recorded."""
        row = (
            await session.execute(
                select(func.count(), func.min(_T.c.created_at)).where(_T.c.status == "pending")
            )
        ).one()
        return int(row[0]), row[1]

    async def sent_after(
        self, session: AsyncSession, position: int, *, limit: int
    ) -> list[SentEvent]:
        """Published events after ``position``, in position order (the replay window).

        Positions are given in increasing order as rows are marked sent (see the module
        doc), so reading on from the last position seen misses nothing still retained.
        """
        rows = await session.execute(
            select(_T.c.position, _T.c.body)
            .where(_T.c.status == "sent", _T.c.position > position)
            .order_by(_T.c.position)
            .limit(limit)
        )
        return [SentEvent(int(r.position), r.body) for r in rows]
