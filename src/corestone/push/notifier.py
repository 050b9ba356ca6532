"""The Notifier: "notify user U of kind K for event E", routed by U's preferences.

Call :meth:`Notifier.notify` inside the transaction that handles the event (an event
consumer's, whose inbox row makes the handling exactly-once). The user's channels for
the kind (:class:`~corestone.push.preferences.PreferenceStore`) decide what happens:

- ``in_app``: the feed row (:class:`~corestone.push.notifications.NotificationFeed`), in
  that transaction. If the row already exists (the same event handled again), nothing
  else happens either: no second email, no second push.
- ``email``: the app's message, queued with ``corestone.email`` in that same
  transaction, with the idempotency key ``notification:<event>:<user>:<kind>``; so it is
  queued exactly when the notification commits, once, and sent by the email sender.
- ``push``: a Web Push message to each of the user's subscriptions, sent *after* the
  transaction commits (never for one that rolls back), on a task of the notifier's own
  so the consumer is not held by a slow push service.

**What a crash loses.** The push is not durable: a process that dies between the commit
and the push service's answer loses that push (the event is handled, its inbox row
says so, nothing sends it again). That is accepted, not avoided: a Web Push is a hint
that something is waiting, and the notification itself is durable in the feed (and in
the email outbox); push services themselves drop messages (TTL, a browser offline too
long) and browsers do not promise to show them. The alternative, a push outbox with its
own sender, would buy at-least-once delivery of a best-effort channel at the price of a
second queue; an app that needs it can list unsent feed rows. At shutdown
:meth:`Notifier.aclose` waits ``drain_seconds`` for pushes in flight before cancelling.

Without an in-app row (the user turned ``in_app`` off) the event's once-only handling
rests on the caller's inbox, and the email on its idempotency key.

Metrics: ``corestone_notifications_created_total{kind, channel}``, counted after the
commit, per channel that carried a notification (push: per message accepted).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics
from corestone.push.notifications import Notification, NotificationFeed, ident
from corestone.push.preferences import Channels, PreferenceStore

if TYPE_CHECKING:
    from corestone.db import Database, Transaction
    from corestone.email.message import EmailMessage
    from corestone.email.service import EmailService
    from corestone.push.webpush import WebPushSender

__all__ = ["EmailBuilder", "Notice", "Notifier", "NotifyResult"]

log = get_logger(__name__)

EmailBuilder = Callable[[], Awaitable["EmailMessage | None"]]
"""Builds the email of one notification; called only when the email channel is on."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification to make: who, what kind, for which event, and what it says.

    ``data`` is the app's JSON, kept on the feed row and merged into the push payload
    (a task id, a URL to open).
    """

    user_id: str | int
    kind: str
    event_id: str
    title: str
    body: str = ""
    workspace_id: str | int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NotifyResult:
    """What :meth:`Notifier.notify` did: the feed row (if any), whether this call made the
    notification (False: it existed, nothing was sent), and the channels it used (push
    is scheduled, not yet sent)."""

    notification: Notification | None
    created: bool
    channels: tuple[str, ...]


class Notifier:
    """Route notifications to the feed, email and Web Push; a component (``aclose``).

    ``email`` and ``push`` are optional: without one, that channel is off whatever the
    preferences say.
    """

    name = "notifier"

    def __init__(
        self,
        database: Database,
        feed: NotificationFeed,
        preferences: PreferenceStore,
        *,
        email: EmailService | None = None,
        push: WebPushSender | None = None,
        metrics: Metrics | None = None,
        push_ttl_seconds: int = 86_400,
        max_pending_pushes: int = 1000,
        drain_seconds: float = 5.0,
    ) -> None:
        self.database = database
        self.feed = feed
        self.preferences = preferences
        self.email = email
        self.push = push
        self.push_ttl = push_ttl_seconds
        self.max_pending = max_pending_pushes
        self.drain_seconds = drain_seconds
        self._pending: set[asyncio.Task[None]] = set()
        self._created = (metrics or Metrics()).counter(
            "notifications_created_total",
            "Notifications created, by kind and by the channel that carried them.",
            ["kind", "channel"],
        )

    async def start(self) -> None:
        """Nothing to start: pushes run on tasks made as notifications commit."""

    async def notify(
        self, tx: Transaction, notice: Notice, *, email: EmailBuilder | None = None
    ) -> NotifyResult:
        """Make ``notice`` a notification in ``tx``, on the channels the user chose."""
        user = ident(notice.user_id, "user_id")
        channels = await self.preferences.channels(tx.session, user, notice.kind)
        notification: Notification | None = None
        if channels.in_app:
            notification, created = await self.feed.create(
                tx.session,
                user_id=user,
                kind=notice.kind,
                event_id=notice.event_id,
                title=notice.title,
                body=notice.body,
                workspace_id=notice.workspace_id,
                data=notice.data,
            )
            if not created:
                return NotifyResult(notification, False, ())
        used = ["in_app"] if notification is not None else []
        if await self._queue_email(tx, notice, user, channels, email):
            used.append("email")
        if channels.push and self.push is not None:
            payload = self.payload(notice, notification)
            tx.after_commit(lambda: self._schedule_push(user, notice.kind, payload))
            used.append("push")
        counted = [c for c in used if c != "push"]
        tx.after_commit(lambda: self._count(notice.kind, counted))
        return NotifyResult(notification, True, tuple(used))

    async def _queue_email(
        self,
        tx: Transaction,
        notice: Notice,
        user: str,
        channels: Channels,
        build: EmailBuilder | None,
    ) -> bool:
        if not channels.email or self.email is None or build is None:
            return False
        message = await build()
        if message is None:
            return False
        key = f"notification:{notice.event_id}:{user}:{notice.kind}"
        message = dataclasses.replace(message, idempotency_key=key)
        workspace = str(notice.workspace_id)
        workspace_id = int(workspace) if workspace.isascii() and workspace.isdigit() else None
        await self.email.send(message, transaction=tx, workspace_id=workspace_id)
        return True

    @staticmethod
    def payload(notice: Notice, notification: Notification | None) -> dict[str, Any]:
        """The push payload: title, body, kind, workspace, notification id, and ``data``."""
        return {
            "title": notice.title,
            "body": notice.body,
            "kind": notice.kind,
            "workspace_id": notice.workspace_id,
            "notification_id": None if notification is None else str(notification.id),
            **notice.data,
        }

    def _count(self, kind: str, channels: list[str]) -> None:
        for channel in channels:
            self._created.labels(kind=kind, channel=channel).inc()

    # -- push, after commit ------------------------------------------------------------------

    def _schedule_push(self, user: str, kind: str, payload: dict[str, Any]) -> None:
        if len(self._pending) >= self.max_pending:
            log.warning("push dropped: too many in flight", kind=kind, pending=len(self._pending))
            return
        task = asyncio.get_running_loop().create_task(self._send_push(user, kind, payload))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send_push(self, user: str, kind: str, payload: dict[str, Any]) -> None:
        """Send ``payload`` to each of the user's browsers; failures are logged, never raised."""
        sender = self.push
        assert sender is not None
        try:
            async with self.database.transaction(read_only=True) as tx:
                subscriptions = await sender.store.list_for_user(tx.session, user)
            for subscription in subscriptions:
                result = await sender.send(subscription, payload, ttl=self.push_ttl)
                if result.ok:
                    self._created.labels(kind=kind, channel="push").inc()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a push is best effort (module doc)
            log.warning("push not sent", kind=kind, error=repr(error))

    async def drain(self) -> None:
        """Wait until every push scheduled so far has been sent (or has failed)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        """Wait up to ``drain_seconds`` for pushes in flight, then cancel the rest."""
        if not self._pending:
            return
        _, late = await asyncio.wait(list(self._pending), timeout=self.drain_seconds)
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
            log.warning("pushes cancelled at shutdown", count=len(late))
