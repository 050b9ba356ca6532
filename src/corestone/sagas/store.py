"""The saga log: one ``corestone_sagas`` row per saga, and the guarded writes that move it.

Every write here is conditional. A state transition names the owner, the status and the
step it expects (``UPDATE … WHERE id = :id AND owner = :me AND status = :s AND
current_step = :n``) and reports whether it matched; a writer that no longer holds the
lease (another process recovered the saga meanwhile) matches nothing, and the
orchestrator stops instead of writing over the new owner. That is the fencing that makes
recovery safe with several processes, on SQLite as on PostgreSQL.

Claiming stuck sagas is one statement on both databases: ``UPDATE … SET owner = :me …
WHERE id IN (SELECT id … WHERE lease expired LIMIT n [FOR UPDATE SKIP LOCKED]) AND lease
expired RETURNING …``. On PostgreSQL the inner ``SKIP LOCKED`` lets concurrent claimers
take disjoint rows without waiting, and the outer condition is re-checked against the
committed row (READ COMMITTED), so a saga is never claimed twice; SQLite has one writer
at a time. Lease times are the application's wall clock (as every timestamp in corestone,
ADR 0006), read through the store's injected ``now``: keep clocks in sync to well under
the lease length.

The table lives on corestone's ``Base.metadata``; an application's migrations create it
like any of its own tables (taskboard: revision ``0002``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    CursorResult,
    Index,
    Integer,
    String,
    Table,
    Text,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from corestone.db.models import Base, UTCDateTime, utc_now

__all__ = ["SagaRecord", "SagaState", "SagaStatus", "SagaStore", "check_json"]

_ERROR_MAX = 2000


class SagaStatus(StrEnum):
    """Where a saga is. ``running`` and ``compensating`` are the ones recovery resumes."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"


_ACTIVE = (SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value)


class SagaRecord(Base):
    """The ``corestone_sagas`` table.

    Steps are recorded by key: ``results`` maps the key of every step whose action
    completed to its result. ``to_compensate`` lists the keys whose compensation is
    still to run, next first (null until the saga starts compensating).
    ``in_flight`` lists the external steps started without a record yet, in start order:
    written (fenced) before each external action, cleared by its record, so recovery
    knows exactly which step a dead process cut off (null: a row logged before the log
    kept it). ``current_step`` is a counter the fenced writes compare: while ``running``,
    the number of recorded steps; while ``compensating``, the number of compensations left.
    ``attempts`` counts executions: 1 for the first run, one more per recovery.
    """

    __tablename__ = "corestone_sagas"
    __table_args__ = (
        CheckConstraint(
            "status IN ('running', 'compensating', 'completed', 'compensated', 'failed')",
            name="status",
        ),
        Index("ix_corestone_sagas_status_locked_until", "status", "locked_until"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    current_step: Mapped[int] = mapped_column(Integer, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    results: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    to_compensate: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    in_flight: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


_T: Table = SagaRecord.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class SagaState:
    """A snapshot of one saga's row."""

    id: str
    type: str
    status: SagaStatus
    current_step: int
    payload: Mapping[str, Any]
    results: Mapping[str, Any]
    to_compensate: tuple[str, ...] | None
    attempts: int
    error: str | None
    owner: str | None
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime
    in_flight: tuple[str, ...] | None = ()
    """External steps started and not yet recorded; None for a row logged before revision 0007."""

    @classmethod
    def from_row(cls, row: Any) -> SagaState:
        m = row._mapping
        return cls(
            id=m["id"],
            type=m["type"],
            status=SagaStatus(m["status"]),
            current_step=m["current_step"],
            payload=dict(m["payload"]),
            results=dict(m["results"]),
            to_compensate=None if m["to_compensate"] is None else tuple(m["to_compensate"]),
            attempts=m["attempts"],
            error=m["error"],
            owner=m["owner"],
            locked_until=m["locked_until"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            in_flight=None if m["in_flight"] is None else tuple(m["in_flight"]),
        )


def check_json(value: Any) -> None:
    """Raise ValueError or TypeError unless ``value`` can be stored in a JSON column.

    Stricter than :func:`json.dumps`: NaN and the infinities are refused, because
    PostgreSQL's ``json`` rejects them, and a value SQLite would take must not fail
    there after a deploy.
    """
    json.dumps(value, allow_nan=False)


def _clip_error(text: str) -> str:
    """An error message short enough for the ``error`` column."""
    return text if len(text) <= _ERROR_MAX else text[: _ERROR_MAX - 1] + "…"


class SagaStore:
    """Reads and guarded writes of ``corestone_sagas``; every method is one statement."""

    def __init__(self, lease_seconds: float, *, now: Callable[[], datetime] = utc_now) -> None:
        self.lease = timedelta(seconds=lease_seconds)
        self.now = now

    async def insert(
        self, session: AsyncSession, *, saga_type: str, payload: Mapping[str, Any], owner: str
    ) -> SagaState:
        """A new ``running`` saga at step 0, leased to ``owner``, on its first attempt."""
        now = self.now()
        values: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "type": saga_type,
            "status": SagaStatus.RUNNING.value,
            "current_step": 0,
            "payload": dict(payload),
            "results": {},
            "in_flight": [],
            "attempts": 1,
            "error": None,
            "owner": owner,
            "locked_until": now + self.lease,
            "created_at": now,
            "updated_at": now,
        }
        await session.execute(insert(_T).values(values))
        return SagaState.from_row(_Row({**values, "to_compensate": None}))

    async def get(self, session: AsyncSession, saga_id: str) -> SagaState | None:
        row = (await session.execute(select(_T).where(_T.c.id == saga_id))).first()
        return None if row is None else SagaState.from_row(row)

    async def transition(
        self,
        session: AsyncSession,
        state: SagaState,
        owner: str,
        *,
        status: SagaStatus,
        current_step: int,
        results: Mapping[str, Any] | None = None,
        to_compensate: Sequence[str] | None = None,
        in_flight: Sequence[str] | None = None,
        error: str | None = None,
    ) -> SagaState | None:
        """Move the saga from ``state`` to the given values and renew the lease.

        ``results``, ``to_compensate``, ``in_flight`` and ``error`` stay as they are
        when None.
        Returns the new state, or None when the row is no longer ``state`` held by
        ``owner`` (the lease was lost): the caller must then roll back and stop.
        """
        now = self.now()
        values: dict[str, Any] = {
            "status": status.value,
            "current_step": current_step,
            "updated_at": now,
            "locked_until": now + self.lease if status.value in _ACTIVE else None,
        }
        if results is not None:
            values["results"] = dict(results)
        if to_compensate is not None:
            values["to_compensate"] = list(to_compensate)
        if in_flight is not None:
            values["in_flight"] = list(in_flight)
        if error is not None:
            values["error"] = _clip_error(error)
        result = await session.execute(
            update(_T)
            .where(
                _T.c.id == state.id,
                _T.c.owner == owner,
                _T.c.status == state.status.value,
                _T.c.current_step == state.current_step,
            )
            .values(values)
        )
        if _rowcount(result) != 1:
            return None
        return replace(
            state,
            status=status,
            current_step=current_step,
            updated_at=now,
            locked_until=values["locked_until"],
            results=dict(results) if results is not None else state.results,
            to_compensate=state.to_compensate if to_compensate is None else tuple(to_compensate),
            in_flight=state.in_flight if in_flight is None else tuple(in_flight),
            error=values.get("error", state.error),
        )

    async def renew(self, session: AsyncSession, saga_id: str, owner: str) -> bool:
        """Extend ``owner``'s lease; False if another process holds the saga now."""
        now = self.now()
        result = await session.execute(
            update(_T)
            .where(_T.c.id == saga_id, _T.c.owner == owner, _T.c.status.in_(_ACTIVE))
            .values(locked_until=now + self.lease)
        )
        return _rowcount(result) == 1

    async def release(self, session: AsyncSession, saga_id: str, owner: str) -> None:
        """Let the lease lapse now, so recovery need not wait for it (on a clean stop)."""
        await session.execute(
            update(_T)
            .where(_T.c.id == saga_id, _T.c.owner == owner, _T.c.status.in_(_ACTIVE))
            .values(locked_until=self.now())
        )

    async def reopen_failed(
        self, session: AsyncSession, saga_id: str, owner: str
    ) -> SagaState | None:
        """Put a ``failed`` saga back to ``compensating`` under ``owner``, attempts reset."""
        now = self.now()
        row = (
            await session.execute(
                update(_T)
                .where(_T.c.id == saga_id, _T.c.status == SagaStatus.FAILED.value)
                .values(
                    status=SagaStatus.COMPENSATING.value,
                    owner=owner,
                    locked_until=now + self.lease,
                    attempts=1,
                    updated_at=now,
                )
                .returning(*_T.c)
            )
        ).first()
        return None if row is None else SagaState.from_row(row)

    async def claim_stuck(
        self,
        session: AsyncSession,
        *,
        types: Sequence[str],
        owner: str,
        limit: int,
        postgresql: bool,
    ) -> list[SagaState]:
        """Take over up to ``limit`` active sagas whose lease has expired, atomically."""
        now = self.now()
        expired = or_(_T.c.locked_until.is_(None), _T.c.locked_until < now)
        candidates = (
            select(_T.c.id)
            .where(_T.c.status.in_(_ACTIVE), _T.c.type.in_(types), expired)
            .order_by(_T.c.locked_until)
            .limit(limit)
        )
        if postgresql:
            candidates = candidates.with_for_update(skip_locked=True)
        # A materialised CTE runs once. As ``id IN (subquery)`` PostgreSQL may run the
        # subquery again for each row it scans, each run skipping the rows the previous
        # one locked, and so take every stuck saga instead of ``limit``.
        chosen = candidates.cte("stuck").prefix_with("MATERIALIZED")
        rows = await session.execute(
            update(_T)
            .where(_T.c.id == chosen.c.id, _T.c.status.in_(_ACTIVE), expired)
            .values(
                owner=owner,
                locked_until=now + self.lease,
                attempts=_T.c.attempts + 1,
                updated_at=now,
            )
            .returning(*_T.c)
        )
        return [SagaState.from_row(row) for row in rows]


class _Row:
    """A mapping posing as a result row, so an insert's values build a SagaState."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._mapping = values


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)
