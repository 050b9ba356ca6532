"""The fenced writes on the email tables (:mod:`corestone.email.tables`, re-exported here).

How a row moves (docs/email-delivery.md has the whole story):

- ``queued``: waiting for ``next_attempt_at``. A sender *claims* it by setting
  ``lease_owner`` / ``lease_expires_at`` and bumping ``fencing_token``, in one
  ``UPDATE … WHERE id IN (SELECT … LIMIT n [FOR UPDATE SKIP LOCKED]) AND <still due>``,
  so two senders never hold one row (PostgreSQL skips rows another claim has locked
  and re-checks the condition on the committed row; SQLite has one writer at a time).
  The status stays ``queued``: a claimed row that was never handed to a provider is
  simply claimable again once its lease expires.
- ``sending``: written (and committed) *before* each provider call, naming the provider.
  A ``sending`` row whose lease has expired is the crash window: the process died
  during a call, or between the provider's acceptance and the write of ``sent``.
- ``sent`` / ``failed`` / ``suppressed`` / ``unknown`` end the sender's work; webhooks
  later move a sent message on (``delivered``, ``bounced``, …).

Every write after the claim is fenced: it names the row's ``fencing_token`` and the
``lease_owner`` it expects, and reports which rows matched. A sender that lost its lease
(and the row was claimed again, which bumps the token) matches nothing and stops.
Timestamps are the application's wall clock (ADR 0006), read through the store's ``now``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import (
        Boolean,
        ColumnElement,
        Integer,
        Table,
        Text,
        and_,
        any_,
        bindparam,
        case,
        column,
        func,
        insert,
        or_,
        select,
        tuple_,
        update,
    )
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncSession

from corestone.db.models import utc_now
from corestone.email._early import settle_early_events
from corestone.email._keys import stored_under_key
from corestone.email.tables import (
    EmailEventRecord,
    EmailOutboxRecord,
    EmailStatus,
    EmailSuppressionRecord,
    SuppressionReason,
)

__all__ = [
    "Claimed",
    "EmailEventRecord",
    "EmailOutboxRecord",
    "EmailStatus",
    "EmailSuppressionRecord",
    "OutboxStore",
    "Outcome",
    "SuppressionReason",
    "clip_reason",
]

_ERROR_MAX = 2000


_OUTBOX: Table = EmailOutboxRecord.__table__  # type: ignore[assignment]
_EVENTS: Table = EmailEventRecord.__table__  # type: ignore[assignment]
_SUPPRESSIONS: Table = EmailSuppressionRecord.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A row a sender holds: what it needs to send it, and the token that fences its writes."""

    id: str
    token: int
    status: EmailStatus
    message: Mapping[str, Any]
    provider: str | None
    attempts: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """One fenced status write: the new status and the row's values to set with it."""

    status: EmailStatus
    provider: str | None = None
    detail: str | None = None
    values: Mapping[str, Any] | None = None


def clip_reason(text: str) -> str:
    """A reason short enough for ``last_error`` / ``detail``, NUL (which PostgreSQL's text
    refuses, failing a whole round's write) replaced by U+FFFD."""
    text = text.replace("\x00", "\ufffd")
    return text if len(text) <= _ERROR_MAX else text[: _ERROR_MAX - 1] + "…"


@dataclass(frozen=True, slots=True)
class _Event:
    """The history row a fenced write adds for each row it changed."""

    status: EmailStatus
    provider: str | None
    detail: str | None
    details: Mapping[str, str] | None
    """Per message id, instead of ``detail``."""
    at: datetime


def _array(name: str, values: list[Any], kind: Any) -> Any:
    """One array parameter of ``kind`` elements (PostgreSQL)."""
    return bindparam(name, values, type_=postgresql.ARRAY(kind))


class OutboxStore:
    """Reads and fenced writes of the outbox; each method is one or two statements.

    The methods take a session whose transaction the caller owns, so the service can
    write inside the caller's transaction and the sender can group its writes.
    """

    def __init__(self, *, now: Callable[[], datetime] = utc_now) -> None:
        self.now = now

    async def insert(
        self,
        session: AsyncSession,
        message: Mapping[str, Any],
        *,
        status: EmailStatus,
        workspace_id: int | None,
        correlation_id: str | None,
        detail: str | None = None,
    ) -> str:
        """Store a message and its first event; return its id.

        With an idempotency key already stored, nothing is written and the stored id is
        returned (``INSERT … ON CONFLICT DO NOTHING``, so a concurrent insert of the same
        key waits for the other transaction instead of failing it).
        """
        values = self.new_row(message, status, workspace_id, correlation_id)
        key, now = values["idempotency_key"], values["created_at"]
        if key is None:
            await session.execute(insert(_OUTBOX).values(values))
        else:
            dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
            stored = await session.execute(
                dialect.insert(_OUTBOX)
                .values(values)
                .on_conflict_do_nothing(index_elements=["idempotency_key"])
                .returning(_OUTBOX.c.id)
            )
            if stored.first() is None:
                return await stored_under_key(session, key, workspace_id)
        await self.record_events(session, [values["id"]], status, detail=detail, at=now)
        return str(values["id"])

    def new_row(
        self, data: Mapping[str, Any], status: EmailStatus, workspace: int | None, cid: str | None
    ) -> dict[str, Any]:  # a new row for the message ``data``, as insert() writes it
        now = self.now()
        return {
            "id": str(uuid.uuid4()), "workspace_id": workspace, "status": status.value,
            "message": dict(data), "idempotency_key": data.get("idempotency_key"),
            "attempts": 0, "next_attempt_at": now if status is EmailStatus.QUEUED else None,
            "lease_owner": None, "lease_expires_at": None, "fencing_token": 0,
            "provider": None, "provider_message_id": None, "last_error": None,
            "correlation_id": cid, "created_at": now, "updated_at": now, "bulk_id": None,
        }  # fmt: skip

    async def record_events(
        self, session: AsyncSession, ids: Collection[str], status: EmailStatus, *,
        provider: str | None = None, detail: str | None = None,
        details: Mapping[str, str] | None = None, at: datetime | None = None,
    ) -> None:  # fmt: skip
        """One history row per message (``details`` per id overrides ``detail``)."""
        if not ids:
            return
        when = at or self.now()
        texts = {message_id: (details or {}).get(message_id, detail) for message_id in ids}
        rows = [
            {"message_id": message_id, "status": status.value, "at": when, "provider": provider,
             "detail": clip_reason(text) if text else None}
            for message_id, text in texts.items()
        ]  # fmt: skip
        await session.execute(insert(_EVENTS), rows)

    async def claim_due(
        self, session: AsyncSession, *, owner: str, limit: int, lease: timedelta, pg: bool
    ) -> list[Claimed]:
        """Lease up to ``limit`` queued messages that are due and not held by anyone."""
        now = self.now()
        due = and_(
            _OUTBOX.c.status == EmailStatus.QUEUED.value,
            _OUTBOX.c.next_attempt_at <= now,
            or_(_OUTBOX.c.lease_expires_at.is_(None), _OUTBOX.c.lease_expires_at < now),
        )
        return await self._claim(session, due, _OUTBOX.c.next_attempt_at, owner, limit, lease, pg)

    async def claim_stale(
        self, session: AsyncSession, *, owner: str, limit: int, lease: timedelta, pg: bool
    ) -> list[Claimed]:
        """Take over ``sending`` rows whose lease expired: the crash window, to resolve."""
        now = self.now()
        stale = and_(
            _OUTBOX.c.status == EmailStatus.SENDING.value, _OUTBOX.c.lease_expires_at < now
        )
        return await self._claim(
            session, stale, _OUTBOX.c.lease_expires_at, owner, limit, lease, pg
        )

    async def _claim(
        self,
        session: AsyncSession,
        condition: ColumnElement[bool],
        order: Any,
        owner: str,
        limit: int,
        lease: timedelta,
        pg: bool,
    ) -> list[Claimed]:
        now = self.now()
        query = select(_OUTBOX.c.id).where(condition).order_by(order).limit(limit)
        if pg:
            query = query.with_for_update(skip_locked=True)
        # A materialised CTE runs once (as ``id IN (subquery)`` PostgreSQL may rerun it per
        # row and claim every due row); its ids go in as one array (joined: rows x candidates).
        # On PostgreSQL the candidates are locked (``FOR UPDATE``, the condition re-checked
        # on the newest row) until this transaction ends: nobody can change them in
        # between, so the update names them by primary key alone. Repeating the condition
        # there lets the planner, without statistics on a young table, scan every due row
        # and test each against the array (~20 ms at a backlog of 4,000). SQLite has one
        # writer at a time; it keeps the condition.
        candidates = query.cte("candidates").prefix_with("MATERIALIZED")
        ids = select(candidates.c.id).scalar_subquery()
        picked = (
            [_OUTBOX.c.id == any_(func.array(ids))]
            if pg
            else [_OUTBOX.c.id == candidates.c.id, condition]
        )
        rows = await session.execute(
            update(_OUTBOX)
            .where(*picked)
            .values(
                lease_owner=owner,
                lease_expires_at=now + lease,
                fencing_token=_OUTBOX.c.fencing_token + 1,
                updated_at=now,
            )
            .returning(
                _OUTBOX.c.id,
                _OUTBOX.c.fencing_token,
                _OUTBOX.c.status,
                _OUTBOX.c.message,
                _OUTBOX.c.provider,
                _OUTBOX.c.attempts,
                _OUTBOX.c.created_at,
            )
        )
        return [
            Claimed(
                r.id,
                r.fencing_token,
                EmailStatus(r.status),
                r.message,
                r.provider,
                r.attempts,
                r.created_at,
            )
            for r in rows
        ]

    async def begin_attempt(
        self,
        session: AsyncSession,
        rows: Sequence[Claimed],
        *,
        owner: str,
        provider: str,
        lease: timedelta,
        details: Mapping[str, str] | None = None,
    ) -> set[str]:
        """Mark ``rows`` ``sending`` through ``provider`` (fenced); return the ids still held.

        This is the re-check before every provider call: a row another sender took over,
        or that an operator moved on, is not returned and must not be sent.
        """
        now = self.now()
        return await self._fenced(
            session,
            rows,
            owner,
            {
                "status": EmailStatus.SENDING.value,
                "provider": provider,
                "attempts": _OUTBOX.c.attempts + 1,
                "lease_expires_at": now + lease,
                "updated_at": now,
            },
            statuses=(EmailStatus.QUEUED, EmailStatus.SENDING),
            event=_Event(EmailStatus.SENDING, provider, None, details, now),
        )

    async def finish(
        self,
        session: AsyncSession,
        rows: Sequence[Claimed],
        outcome: Outcome,
        *,
        owner: str,
        per_row: Mapping[str, Mapping[str, Any]] | None = None,
        details: Mapping[str, str] | None = None,
        release: bool = True,
    ) -> set[str]:
        """Move ``rows`` to ``outcome.status`` (fenced) with its history rows.

        ``per_row`` gives column values that differ by message (``{column: {id: value}}``);
        ``release`` ends the lease (every status but a retry the sender still works on).
        """
        now = self.now()
        values: dict[str, Any] = {"status": outcome.status.value, "updated_at": now}
        values.update(outcome.values or {})
        if release:
            values.update(lease_owner=None, lease_expires_at=None)
        event = _Event(outcome.status, outcome.provider, outcome.detail, details, now)
        held = await self._fenced(
            session, rows, owner, values, statuses=(EmailStatus.QUEUED, EmailStatus.SENDING),
            per_row=per_row, event=event,
        )  # fmt: skip
        if outcome.status is EmailStatus.SENT:  # a webhook may have been faster than us
            await settle_early_events(session, held)
        return held

    async def release(
        self,
        session: AsyncSession,
        rows: Sequence[Claimed],
        *,
        owner: str,
        at: Mapping[str, datetime],
    ) -> None:
        """Give queued rows back, each due again at ``at[id]`` (no status change)."""
        values = {"lease_owner": None, "lease_expires_at": None, "updated_at": self.now()}
        await self._fenced(
            session, rows, owner, values, statuses=(EmailStatus.QUEUED,),
            per_row={"next_attempt_at": at},
        )  # fmt: skip

    async def _fenced(
        self,
        session: AsyncSession,
        rows: Sequence[Claimed],
        owner: str,
        values: Mapping[str, Any],
        statuses: Sequence[EmailStatus],
        *,
        per_row: Mapping[str, Mapping[str, Any]] | None = None,
        event: _Event | None = None,
    ) -> set[str]:
        """Write ``values`` (and ``per_row``) on the rows still held; their events; the ids.

        A row is held when its ``fencing_token`` and ``lease_owner`` are still this claim's
        and its status one of ``statuses``. ``event``: one history row per held row.
        """
        if not rows:
            return set()
        if session.get_bind().dialect.name == "postgresql":
            return await self._fenced_pg(session, rows, owner, values, statuses, per_row, event)
        values = dict(values)
        for name, by_id in (per_row or {}).items():
            values[name] = case(dict(by_id), value=_OUTBOX.c.id, else_=_OUTBOX.c[name])
        result = await session.execute(
            update(_OUTBOX)
            .where(  # ``id IN``: the primary key finds the rows; the pairs alone scan the table
                _OUTBOX.c.id.in_([r.id for r in rows]),
                tuple_(_OUTBOX.c.id, _OUTBOX.c.fencing_token).in_([(r.id, r.token) for r in rows]),
                _OUTBOX.c.lease_owner == owner,
                _OUTBOX.c.status.in_([s.value for s in statuses]),
            )
            .values(values)
            .returning(_OUTBOX.c.id)
        )
        held = {row.id for row in result}
        if event is not None:
            await self.record_events(
                session, held, event.status, provider=event.provider,
                detail=event.detail, details=event.details, at=event.at,
            )  # fmt: skip
        return held

    async def _fenced_pg(
        self,
        session: AsyncSession,
        rows: Sequence[Claimed],
        owner: str,
        values: Mapping[str, Any],
        statuses: Sequence[EmailStatus],
        per_row: Mapping[str, Mapping[str, Any]] | None,
        event: _Event | None,
    ) -> set[str]:
        """:meth:`_fenced` as one statement, whatever the number of rows.

        The rows come in as arrays (``UPDATE … FROM unnest(ids, tokens, …)``: one
        parameter per column, not one per row, so the statement is the same text for any
        batch and compiles once), and the history rows are inserted by the same statement
        from what the update returned (a data-modifying CTE): one round trip, where a
        list of ``IN`` pairs, a ``CASE`` per row and an ``executemany`` of events were two
        and built hundreds of bound parameters in Python.
        """
        ids = [r.id for r in rows]
        columns = [column("id", _OUTBOX.c.id.type), column("token", Integer)]
        arrays = [
            _array("ids", ids, _OUTBOX.c.id.type),
            _array("tokens", [r.token for r in rows], Integer()),
        ]
        for name, by_id in (per_row or {}).items():
            kind = _OUTBOX.c[name].type
            columns += [column(f"{name}_v", kind), column(f"{name}_set", Boolean)]
            arrays += [
                _array(f"{name}_v", [by_id.get(i) for i in ids], kind),
                _array(f"{name}_set", [i in by_id for i in ids], Boolean()),
            ]
        if event is not None:
            details = event.details or {}
            texts = [details.get(i, event.detail) for i in ids]
            columns.append(column("detail", Text))
            arrays.append(_array("details", [clip_reason(t) if t else None for t in texts], Text()))
        given = func.unnest(*arrays).table_valued(*columns).render_derived("given")
        assigned = dict(values)
        for name in per_row or {}:
            assigned[name] = case(
                (given.c[f"{name}_set"], given.c[f"{name}_v"]), else_=_OUTBOX.c[name]
            )
        held = (
            update(_OUTBOX)
            .where(
                _OUTBOX.c.id == given.c.id,
                _OUTBOX.c.fencing_token == given.c.token,
                _OUTBOX.c.lease_owner == owner,
                _OUTBOX.c.status.in_([s.value for s in statuses]),
            )
            .values(assigned)
            .returning(_OUTBOX.c.id, *([given.c.detail] if event is not None else []))
            .cte("held")
        )
        query = select(held.c.id)
        if event is not None:
            history = insert(_EVENTS).from_select(
                ["message_id", "status", "at", "provider", "detail"],
                select(
                    held.c.id,
                    bindparam("event_status", event.status.value, type_=_EVENTS.c.status.type),
                    bindparam("event_at", event.at, type_=_EVENTS.c.at.type),
                    bindparam("event_provider", event.provider, type_=_EVENTS.c.provider.type),
                    held.c.detail,
                ),
            )
            query = query.add_cte(history.cte("history"))
        return {row.id for row in await session.execute(query)}

    async def requeue(self, session: AsyncSession, message_id: str, *, detail: str) -> bool:
        """Queue a ``failed`` or ``unknown`` message again (an operator's retry); False if not one.

        For ``unknown`` this is the operator's call that a second copy is acceptable (or
        that the provider's logs show none went out).
        """
        now = self.now()
        result = await session.execute(
            update(_OUTBOX)
            .where(
                _OUTBOX.c.id == message_id,
                _OUTBOX.c.status.in_([EmailStatus.FAILED.value, EmailStatus.UNKNOWN.value]),
            )
            .values(
                status=EmailStatus.QUEUED.value,
                next_attempt_at=now,
                lease_owner=None,
                lease_expires_at=None,
                fencing_token=_OUTBOX.c.fencing_token + 1,
                updated_at=now,
            )
            .returning(_OUTBOX.c.id)
        )
        if result.first() is None:
            return False
        await self.record_events(session, [message_id], EmailStatus.QUEUED, detail=detail, at=now)
        return True

    async def suppressed_among(self, session: AsyncSession, addresses: Iterable[str]) -> set[str]:
        """Which of ``addresses`` (compared lower-cased) are on the suppression list."""
        wanted = {a.lower() for a in addresses}
        if not wanted:
            return set()
        rows = await session.execute(
            select(_SUPPRESSIONS.c.address).where(_SUPPRESSIONS.c.address.in_(sorted(wanted)))
        )
        return {row.address for row in rows}

    async def suppress(
        self,
        session: AsyncSession,
        address: str,
        reason: SuppressionReason,
        *,
        detail: str | None = None,
    ) -> None:
        """Put ``address`` on the suppression list (the newest reason wins). An address
        past 320 characters is no mailbox (RFC 5321): ignored, never a failed write."""
        if len(address) > 320:  # else a provider's retried webhook would fail forever
            return
        values = {
            "address": address.lower(),
            "reason": reason.value,
            "at": self.now(),
            "detail": clip_reason(detail) if detail else None,
        }
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        statement = dialect.insert(_SUPPRESSIONS).values(values)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["address"],
                set_={k: statement.excluded[k] for k in ("reason", "at", "detail")},
            )
        )

    async def backlog(self, session: AsyncSession) -> tuple[int, datetime | None]:
        """How many messages wait (queued or sending), and when the oldest was accepted."""
        waiting = _OUTBOX.c.status.in_([EmailStatus.QUEUED.value, EmailStatus.SENDING.value])
        query = select(func.count(), func.min(_OUTBOX.c.created_at)).where(waiting)
        row = (await session.execute(query)).one()
        return int(row[0]), row[1]
