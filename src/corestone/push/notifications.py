"""The notification feed: one row per (event, user, kind), pages newest first, read state.

A notification is what an event means to one person ("you were assigned …"): the app
decides who and what kind (corestone knows no kinds), :class:`NotificationFeed` keeps
the rows in ``corestone_notifications``. It is the in-app channel of
:class:`~corestone.push.notifier.Notifier`, and the inbox a page shows with a bell.

- **Idempotent creation.** ``UNIQUE (event_id, user_id, kind)``: :meth:`NotificationFeed.create`
  is ``INSERT … ON CONFLICT DO NOTHING`` (PostgreSQL and SQLite alike), so an event
  handled twice (a redelivery, a replayed dead letter) makes one row, and the second call
  says it made none (``created`` False) so the caller sends nothing twice either.
- **Pages** are a keyset walk on the row id, descending (ids grow with inserts, so
  newest first, and rows added while a client pages never shift a page). The cursor is
  signed (:class:`~corestone.db.CursorCodec`) for that user and filter: a cursor edited,
  made for another user, or for the other filter is InvalidInputError naming ``cursor``.
- **Read state** is ``read_at``: :meth:`~NotificationFeed.mark_read` of another user's
  id is NotFoundError (no existence leak), marking again changes nothing;
  :meth:`~NotificationFeed.mark_all_read` one UPDATE. The unread count reads the index
  on ``(user_id, read_at)``.

User and workspace ids are strings (up to 64 characters), like the push subscriptions'.
Every method runs in a session the caller owns (``async with db.transaction() as tx``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import JSON, Index, String, Table, Text, UniqueConstraint, func, select, update
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Mapped, mapped_column

from corestone.db.models import Base, BigIntId, UTCDateTime, utc_now
from corestone.db.pagination import CursorCodec, check_limit
from corestone.errors import InvalidInputError, NotFoundError

__all__ = [
    "BODY_MAX",
    "ID_MAX",
    "KIND_MAX",
    "TITLE_MAX",
    "Notification",
    "NotificationFeed",
    "NotificationPage",
    "NotificationRecord",
    "clip",
    "ident",
]

ID_MAX: Final = 64
KIND_MAX: Final = 64
TITLE_MAX: Final = 300
BODY_MAX: Final = 2000


class NotificationRecord(Base):
    """``corestone_notifications``: each person's feed."""

    __tablename__ = "corestone_notifications"
    __table_args__ = (
        UniqueConstraint("event_id", "user_id", "kind", name="uq_corestone_notifications_event"),
        Index("ix_corestone_notifications_user_id_id", "user_id", "id"),
        Index("ix_corestone_notifications_user_id_read_at", "user_id", "read_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(ID_MAX), nullable=False)
    workspace_id: Mapped[str | None] = mapped_column(String(ID_MAX), nullable=True)
    kind: Mapped[str] = mapped_column(String(KIND_MAX), nullable=False)
    event_id: Mapped[str] = mapped_column(String(ID_MAX), nullable=False)
    title: Mapped[str] = mapped_column(String(TITLE_MAX), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


_TABLE: Table = NotificationRecord.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification as stored (``data``: the app's own JSON, e.g. a task id and a URL)."""

    id: int
    user_id: str
    workspace_id: str | None
    kind: str
    event_id: str
    title: str
    body: str
    data: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    read_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NotificationPage:
    """A page, newest first; ``next_cursor`` None at the end."""

    items: list[Notification]
    next_cursor: str | None


def ident(value: str | int | None, name: str) -> str:
    """``value`` as a stored id: 1-64 printable characters, else InvalidInputError on ``name``."""
    text = "" if value is None else str(value)
    if not text or len(text) > ID_MAX or not text.isprintable():
        raise InvalidInputError(f"{name}: must be 1-{ID_MAX} printable characters", field=name)
    return text


def clip(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters (an ellipsis last): a row never fails on length."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _notification(row: Any) -> Notification:
    return Notification(
        id=row.id,
        user_id=row.user_id,
        workspace_id=row.workspace_id,
        kind=row.kind,
        event_id=row.event_id,
        title=row.title,
        body=row.body,
        data=dict(row.data or {}),
        created_at=row.created_at,
        read_at=row.read_at,
    )


class NotificationFeed:
    """Create, page and mark notifications, in the caller's transaction.

    ``signing_key`` signs cursors (the app's secret; at least 16 bytes).
    """

    def __init__(
        self, signing_key: bytes, *, max_limit: int = 100, now: Callable[[], datetime] = utc_now
    ) -> None:
        self._cursors = CursorCodec(signing_key)
        self.max_limit = max_limit
        self.now = now

    async def create(
        self,
        session: AsyncSession,
        *,
        user_id: str | int,
        kind: str,
        event_id: str,
        title: str,
        body: str = "",
        workspace_id: str | int | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> tuple[Notification, bool]:
        """The notification of (``event_id``, ``user_id``, ``kind``), and whether this call made it.

        A second call for the same three finds the first row and writes nothing.
        """
        values = {
            "user_id": ident(user_id, "user_id"),
            "workspace_id": None if workspace_id is None else ident(workspace_id, "workspace_id"),
            "kind": ident(kind, "kind"),
            "event_id": ident(event_id, "event_id"),
            "title": clip(title, TITLE_MAX),
            "body": clip(body, BODY_MAX),
            "data": dict(data or {}),
            "created_at": self.now(),
        }
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(_TABLE)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["event_id", "user_id", "kind"])
            .returning(*_TABLE.c)
        )
        row = (await session.execute(statement)).first()
        if row is not None:
            return _notification(row), True
        existing = (
            await session.execute(
                select(_TABLE).where(
                    _TABLE.c.event_id == values["event_id"],
                    _TABLE.c.user_id == values["user_id"],
                    _TABLE.c.kind == values["kind"],
                )
            )
        ).one()
        return _notification(existing), False

    async def page(
        self,
        session: AsyncSession,
        user_id: str | int,
        *,
        unread: bool = False,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> NotificationPage:
        """The user's notifications, newest first (only unread ones if ``unread``)."""
        user = ident(user_id, "user_id")
        size = check_limit(limit, default=min(50, self.max_limit), maximum=self.max_limit)
        scope = f"corestone_notifications:{user}:{'unread' if unread else 'all'}"
        statement = select(_TABLE).where(_TABLE.c.user_id == user)
        if unread:
            statement = statement.where(_TABLE.c.read_at.is_(None))
        if cursor is not None:
            (last_id,), _ = self._cursors.decode(cursor, scope=scope)
            if type(last_id) is not int:
                raise InvalidInputError(
                    "not a cursor issued for this query", field="cursor", rule="cursor"
                )
            statement = statement.where(_TABLE.c.id < last_id)
        rows = list(await session.execute(statement.order_by(_TABLE.c.id.desc()).limit(size + 1)))
        items = [_notification(row) for row in rows[:size]]
        more = len(rows) > size
        next_cursor = (
            self._cursors.encode([items[-1].id], scope=scope, direction="next") if more else None
        )
        return NotificationPage(items, next_cursor)

    async def unread_count(self, session: AsyncSession, user_id: str | int) -> int:
        """How many of the user's notifications are unread."""
        count = await session.scalar(
            select(func.count())
            .select_from(_TABLE)
            .where(_TABLE.c.user_id == ident(user_id, "user_id"), _TABLE.c.read_at.is_(None))
        )
        return int(count or 0)

    async def mark_read(
        self, session: AsyncSession, user_id: str | int, notification_id: int
    ) -> None:
        """Mark one of the user's notifications read; NotFoundError if it is not theirs.

        Already read: nothing changes (its first ``read_at`` stays).
        """
        user = ident(user_id, "user_id")
        found = await session.scalar(
            select(_TABLE.c.read_at.is_(None)).where(
                _TABLE.c.id == notification_id, _TABLE.c.user_id == user
            )
        )
        if found is None:
            raise NotFoundError(f"no notification {notification_id}")
        if found:
            await session.execute(
                update(_TABLE)
                .where(
                    _TABLE.c.id == notification_id,
                    _TABLE.c.user_id == user,
                    _TABLE.c.read_at.is_(None),
                )
                .values(read_at=self.now())
            )

    async def mark_all_read(self, session: AsyncSession, user_id: str | int) -> int:
        """Mark every unread notification of the user read; how many were."""
        result = await session.execute(
            update(_TABLE)
            .where(_TABLE.c.user_id == ident(user_id, "user_id"), _TABLE.c.read_at.is_(None))
            .values(read_at=self.now())
        )
        return int(getattr(result, "rowcount", 0))  # a count, not every id marked
