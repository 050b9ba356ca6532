"""The caller's notifications, preferences and Web Push subscriptions: the use cases
behind ``/api/me/notifications``, ``/api/me/notification-preferences`` and push.

Everything here is the caller's own: a user id comes from the token, never from the
request, so nobody reads or marks another user's notifications (another user's
notification id is "not found", like a missing one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corestone.db import Database
from corestone.email.unsubscribe import UnsubscribeRequest
from corestone.errors import NotFoundError
from corestone.push import (
    Channels,
    NotificationFeed,
    NotificationPage,
    PreferenceStore,
    PushSubscription,
    SubscriptionStore,
)
from taskboard.domain.models import User
from taskboard.services.notifications import ASSIGNMENTS_LIST, parse_notification_list
from taskboard.services.repositories import UserRepository

__all__ = ["NotificationService", "PushOffError"]


class PushOffError(NotFoundError):
    """Web Push is not configured here (no VAPID key): its routes answer 404."""


class NotificationService:
    """The feed, the preferences and the push subscriptions of the calling user.

    ``public_key`` is the VAPID application server key, None when Web Push is off.
    """

    def __init__(
        self,
        database: Database,
        feed: NotificationFeed,
        preferences: PreferenceStore,
        subscriptions: SubscriptionStore,
        *,
        public_key: str | None,
    ) -> None:
        self._db = database
        self.feed = feed
        self.preferences = preferences
        self.subscriptions = subscriptions
        self._public_key = public_key

    async def page(
        self, caller: User, *, unread: bool, cursor: str | None, limit: int
    ) -> NotificationPage:
        async with self._db.transaction(read_only=True) as tx:
            return await self.feed.page(
                tx.session, caller.id, unread=unread, cursor=cursor, limit=limit
            )

    async def unread_count(self, caller: User) -> int:
        async with self._db.transaction(read_only=True) as tx:
            return await self.feed.unread_count(tx.session, caller.id)

    async def mark_read(self, caller: User, notification_id: str) -> None:
        """NotFoundError for an id that is not one of the caller's notifications."""
        if not (notification_id.isascii() and notification_id.isdigit()) or (
            len(notification_id) > 18
        ):
            raise NotFoundError(f"no notification {notification_id[:40]!r}")
        async with self._db.transaction() as tx:
            await self.feed.mark_read(tx.session, caller.id, int(notification_id))

    async def mark_all_read(self, caller: User) -> int:
        async with self._db.transaction() as tx:
            return await self.feed.mark_all_read(tx.session, caller.id)

    async def get_preferences(self, caller: User) -> dict[str, Channels]:
        async with self._db.transaction(read_only=True) as tx:
            return await self.preferences.get(tx.session, caller.id)

    async def update_preferences(
        self, caller: User, changes: Mapping[str, Any]
    ) -> dict[str, Channels]:
        async with self._db.transaction() as tx:
            return await self.preferences.update(tx.session, caller.id, changes)

    async def unsubscribe_email(self, request: UnsubscribeRequest) -> bool:
        """What a notification email's unsubscribe link does: no more email of its kind to
        its user (a preference; other mail still goes to the address). False for a link
        that is not a notification's (the address is then suppressed, as before).

        A link from before notifications (list ``task-assignments``) names no user: the
        user with its address, if any, stops getting ``task.assigned`` email.
        """
        wanted = parse_notification_list(request.list_id)
        async with self._db.transaction() as tx:
            if wanted is None and request.list_id == ASSIGNMENTS_LIST:
                user = await UserRepository(tx).find_by_email(request.address)
                wanted = None if user is None else ("task.assigned", user.id)
            if wanted is None or wanted[0] not in self.preferences.defaults:
                return False
            kind, user_id = wanted
            await self.preferences.update(tx.session, user_id, {kind: {"email": False}})
            return True

    @property
    def push_enabled(self) -> bool:
        return self._public_key is not None

    def public_key(self) -> str:
        """The application server key for ``pushManager.subscribe``; PushOffError if off."""
        if self._public_key is None:
            raise PushOffError("Web Push is not configured on this server")
        return self._public_key

    async def subscribe(self, caller: User, subscription: Mapping[str, Any]) -> PushSubscription:
        """Register the caller's browser (its ``PushSubscription.toJSON()``)."""
        self.public_key()
        async with self._db.transaction() as tx:
            return await self.subscriptions.register(tx.session, caller.id, subscription)

    async def unsubscribe(self, caller: User, endpoint: str) -> None:
        """Forget the caller's subscription of ``endpoint`` (nothing if there is none)."""
        self.public_key()
        async with self._db.transaction() as tx:
            await self.subscriptions.remove(tx.session, caller.id, endpoint)
