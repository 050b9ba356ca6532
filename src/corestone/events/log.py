"""The outbox's sent rows read as a log: events in position order, and the retained window.

A live stream (:mod:`corestone.push.feed`) follows this log, and a client that
reconnects resumes from the last position it saw. That is sound because of how the
outbox numbers what it sends (:mod:`corestone.events.outbox`): a row gets its
``position`` when the relay marks it sent, as the next number after the largest, under
one lock, so positions become visible in increasing order. A reader of "events after P"
therefore never skips one that commits later with a smaller number.

Only sent rows have a position, so ``position > P`` alone selects sent rows (and walks
the ``position`` index); one workspace's reads walk ``(workspace_id, position)``
(migration 0014). Pruning deletes the oldest sent rows but keeps the newest, so the
newest position never goes back.
"""

from __future__ import annotations

from dataclasses import dataclass

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import Table, func, select
    from sqlalchemy.ext.asyncio import AsyncSession

from corestone.events.outbox import EventOutboxRecord

__all__ = ["LogWindow", "LoggedEvent", "read_after", "read_window"]

_T: Table = EventOutboxRecord.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """A sent event: its position, type, workspace (as stored: text or None) and JSON body."""

    position: int
    type: str
    workspace_id: str | None
    body: str


@dataclass(frozen=True, slots=True)
class LogWindow:
    """The positions the outbox still holds: ``oldest`` to ``newest`` (both 0 when empty)."""

    oldest: int
    newest: int

    def resumes(self, position: int) -> bool:
        """Whether a reader who saw ``position`` can read on with nothing missing.

        True when everything after it is still retained (it is at most one before the
        oldest kept row) and it is not from the future (at most the newest). A position
        past the newest is garbage, or from a database that was reset: the reader must
        start over.
        """
        if position < 0:
            return False
        if self.newest == 0:
            return position == 0
        return self.oldest - 1 <= position <= self.newest


async def read_after(
    session: AsyncSession, position: int, *, limit: int, workspace_id: str | None = None
) -> list[LoggedEvent]:
    """Up to ``limit`` sent events after ``position``, in position order.

    All workspaces' (what one process's feed reads for every stream it serves), or only
    ``workspace_id``'s (a stream resuming).
    """
    query = select(_T.c.position, _T.c.type, _T.c.workspace_id, _T.c.body).where(
        _T.c.position > position
    )
    if workspace_id is not None:
        query = query.where(_T.c.workspace_id == workspace_id)
    rows = await session.execute(query.order_by(_T.c.position).limit(limit))
    return [LoggedEvent(int(r.position), r.type, r.workspace_id, r.body) for r in rows]


async def read_window(session: AsyncSession) -> LogWindow:
    """The oldest and newest positions retained (two index lookups)."""
    row = (await session.execute(select(func.min(_T.c.position), func.max(_T.c.position)))).one()
    return LogWindow(int(row[0] or 0), int(row[1] or 0))
