"""Notification preferences: per user and per kind, which channels carry a notification.

The channels are ``in_app`` (the feed), ``email`` (``corestone.email``) and ``push``
(Web Push). The app declares its kinds and each kind's default channels
(:class:`PreferenceStore` takes them); a user's row in
``corestone_notification_preferences`` overrides some of them. A column left NULL
follows the default, so an app that changes a default later changes it for everyone
who never chose otherwise, and a user's explicit choice stays.

A kind or channel the app did not declare, or a value that is not a boolean, is
InvalidInputError naming the field (``preferences.<kind>.<channel>``): an update is
checked whole before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal

from corestone._extras import requires_extra

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import Boolean, PrimaryKeyConstraint, String, Table, select
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Mapped, mapped_column

from corestone.db.models import Base, UTCDateTime, utc_now
from corestone.errors import InvalidInputError
from corestone.push.notifications import ID_MAX, KIND_MAX, ident

__all__ = ["CHANNELS", "Channel", "Channels", "PreferenceRecord", "PreferenceStore"]

Channel = Literal["in_app", "email", "push"]
CHANNELS: Final[tuple[Channel, ...]] = ("in_app", "email", "push")


class PreferenceRecord(Base):
    """``corestone_notification_preferences``: a user's choices for one kind (NULL: default)."""

    __tablename__ = "corestone_notification_preferences"
    __table_args__ = (
        PrimaryKeyConstraint("user_id", "kind", name="pk_corestone_notification_preferences"),
    )

    user_id: Mapped[str] = mapped_column(String(ID_MAX), nullable=False)
    kind: Mapped[str] = mapped_column(String(KIND_MAX), nullable=False)
    in_app: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    email: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    push: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


_TABLE: Table = PreferenceRecord.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Channels:
    """Which channels carry one kind of notification."""

    in_app: bool = True
    email: bool = False
    push: bool = False

    def as_dict(self) -> dict[str, bool]:
        """``{"in_app": …, "email": …, "push": …}``."""
        return {"in_app": self.in_app, "email": self.email, "push": self.push}


class PreferenceStore:
    """Read and change users' preferences, in the caller's transaction.

    ``defaults`` names every kind the app has, with its default channels.
    """

    def __init__(
        self, defaults: Mapping[str, Channels], *, now: Callable[[], datetime] = utc_now
    ) -> None:
        if not defaults:
            raise ValueError("declare at least one kind")
        for kind in defaults:
            if not kind or len(kind) > KIND_MAX:
                raise ValueError(f"kind {kind!r}: 1-{KIND_MAX} characters")
        self.defaults = dict(defaults)
        self.now = now

    @property
    def kinds(self) -> tuple[str, ...]:
        """The declared kinds, in declaration order."""
        return tuple(self.defaults)

    def check_kind(self, kind: str, *, field: str = "kind") -> None:
        """InvalidInputError naming ``field`` unless ``kind`` is declared."""
        if kind not in self.defaults:
            raise InvalidInputError(
                f"{field}: unknown kind; one of {', '.join(self.defaults)}", field=field
            )

    async def get(self, session: AsyncSession, user_id: str | int) -> dict[str, Channels]:
        """Every declared kind's channels for the user, defaults filled in."""
        user = ident(user_id, "user_id")
        rows = await session.execute(select(_TABLE).where(_TABLE.c.user_id == user))
        stored = {row.kind: row for row in rows}
        return {kind: _merged(default, stored.get(kind)) for kind, default in self.defaults.items()}

    async def channels(self, session: AsyncSession, user_id: str | int, kind: str) -> Channels:
        """The channels that carry ``kind`` to the user (InvalidInputError for an unknown kind)."""
        self.check_kind(kind)
        row = (
            await session.execute(
                select(_TABLE).where(
                    _TABLE.c.user_id == ident(user_id, "user_id"), _TABLE.c.kind == kind
                )
            )
        ).first()
        return _merged(self.defaults[kind], row)

    async def update(
        self,
        session: AsyncSession,
        user_id: str | int,
        changes: Mapping[str, Any],
        *,
        field: str = "preferences",
    ) -> dict[str, Channels]:
        """Apply ``{kind: {channel: bool}}`` (any subset); every kind's channels after it.

        The whole of ``changes`` is checked first (InvalidInputError naming
        ``<field>.<kind>`` or ``<field>.<kind>.<channel>``); nothing is written for a bad one.
        """
        user = ident(user_id, "user_id")
        checked = self._checked(changes, field)
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        for kind, values in checked.items():
            if not values:
                continue
            now = self.now()
            statement = (
                dialect.insert(_TABLE)
                .values(user_id=user, kind=kind, updated_at=now, **values)
                .on_conflict_do_update(
                    index_elements=["user_id", "kind"], set_={**values, "updated_at": now}
                )
            )
            await session.execute(statement)
        return await self.get(session, user)

    def _checked(self, changes: Mapping[str, Any], field: str) -> dict[str, dict[str, bool]]:
        if not isinstance(changes, Mapping):
            raise InvalidInputError(f"{field}: must be an object of kinds", field=field)
        checked: dict[str, dict[str, bool]] = {}
        for kind, values in changes.items():
            where = f"{field}.{kind}"
            self.check_kind(kind, field=where)
            if not isinstance(values, Mapping):
                raise InvalidInputError(f"{where}: must be an object of channels", field=where)
            checked[kind] = {}
            for channel, value in values.items():
                if channel not in CHANNELS:
                    raise InvalidInputError(
                        f"{where}.{channel}: unknown channel; one of {', '.join(CHANNELS)}",
                        field=f"{where}.{channel}",
                    )
                if not isinstance(value, bool):
                    raise InvalidInputError(
                        f"{where}.{channel}: must be true or false", field=f"{where}.{channel}"
                    )
                checked[kind][channel] = value
        return checked


def _merged(default: Channels, row: Any) -> Channels:
    if row is None:
        return default
    chosen = {c: getattr(row, c) for c in CHANNELS if getattr(row, c) is not None}
    return replace(default, **chosen)
