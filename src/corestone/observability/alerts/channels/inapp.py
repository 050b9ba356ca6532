"""The in-app channel: a notification in each recipient's feed (:mod:`corestone.push`).

corestone does not know who should hear about an alert: the application passes
``recipients``, a coroutine returning user ids (taskboard: every owner of a workspace).
Rows are created with the event id ``alert:<group>:<seq>``, so creating them twice
(a retry) makes one row per person.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

from corestone.observability.alerts.channels._base import AlertNotification, plain

if TYPE_CHECKING:
    from corestone.db.database import Database
    from corestone.push.notifications import NotificationFeed

__all__ = ["KIND", "InAppChannel", "Recipients"]

KIND: Final = "alert"
"""The notifications' ``kind``."""

Recipients = Callable[[], Awaitable[Sequence[str | int]]]
"""Who gets in-app alert notifications (asked at each send)."""


def _summary(notification: AlertNotification) -> str:
    parts = []
    for alert in notification.alerts[:10]:
        text = alert.annotations.get("summary") or alert.annotations.get("description") or ""
        parts.append(plain(f"{alert.rule} ({alert.state.value}) {text}".strip(), 300))
    return "\n".join(parts)


class InAppChannel:
    """Creates one feed notification per recipient, in one transaction."""

    name = "inapp"

    def __init__(self, database: Database, feed: NotificationFeed, recipients: Recipients) -> None:
        self.database, self.feed, self.recipients = database, feed, recipients

    async def send(self, notification: AlertNotification) -> int:
        users = await self.recipients()
        title, body = notification.title(), _summary(notification)
        data = {
            "group_key": notification.group_key,
            "status": notification.status,
            "alerts": len(notification.alerts),
        }
        async with self.database.transaction() as tx:
            for user in users:
                await self.feed.create(
                    tx.session,
                    user_id=user,
                    kind=KIND,
                    event_id=notification.key,
                    title=title,
                    body=body,
                    data=data,
                )
        return 1
