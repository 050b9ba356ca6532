"""taskboard's notifications wiring: the feed, the preferences, the Notifier, Web Push.

Web Push is on when ``CORESTONE_VAPID_PRIVATE_KEY`` (with ``CORESTONE_VAPID_SUBJECT``)
is set: a :class:`~corestone.push.WebPushSender` with those keys, through the process's
breakers and metrics, carries the ``push`` channel. Without them the channel is off
(whatever the preferences say), ``GET /api/push/public-key`` is a 404 problem, and a
log line at start says so. Every process of a service must share the key (docs/push.md).

Push endpoints must be public https URLs (:class:`~corestone.push.EndpointPolicy`);
``push_policy`` replaces the rule (tests allow their local push service's origin).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from corestone import Infrastructure
from corestone.db import Database
from corestone.observability import get_logger
from corestone.push import (
    EndpointPolicy,
    NotificationFeed,
    Notifier,
    PreferenceStore,
    SubscriptionStore,
    VapidKeys,
    WebPushSender,
)
from taskboard.mail import MailWiring
from taskboard.services.inbox import NotificationService
from taskboard.services.notify import KINDS

__all__ = ["NotifyWiring", "notify_wiring_for", "setup_notifications"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class NotifyWiring:
    """The notifier (for the consumer), the service (for the routes), the push sender."""

    notifier: Notifier
    service: NotificationService
    sender: WebPushSender | None


class _WebPush:
    """Says at start whether Web Push is on, and closes the sender (its HTTP client)."""

    name = "webpush"

    def __init__(self, sender: WebPushSender | None) -> None:
        self.sender = sender

    async def start(self) -> None:
        if self.sender is None:
            log.info("web push off: CORESTONE_VAPID_PRIVATE_KEY is not set")
        else:
            log.info("web push on", public_key=self.sender.keys.application_server_key)

    async def aclose(self) -> None:
        if self.sender is not None:
            await self.sender.aclose()


def setup_notifications(
    infra: Infrastructure, mail: MailWiring, *, push_policy: EndpointPolicy | None = None
) -> NotifyWiring:
    """Build and register the notification service; the notifier and push as components."""
    settings = infra.settings
    feed = NotificationFeed(settings.signing_key)
    preferences = PreferenceStore(KINDS)
    store = SubscriptionStore(policy=push_policy or EndpointPolicy())
    sender = None
    if settings.vapid_private_key is not None:
        sender = WebPushSender(
            VapidKeys.from_settings(settings),
            database=infra.db,
            store=store,
            breakers=infra.breakers,
            metrics=infra.metrics,
        )
    notifier = Notifier(
        infra.db, feed, preferences, email=mail.email, push=sender, metrics=infra.metrics
    )
    # Stopped in reverse: the notifier drains its pushes before the sender closes.
    infra.add(_WebPush(sender), component_type="component", critical=False)
    infra.add(notifier, component_type="component", critical=False)
    public_key = sender.keys.application_server_key if sender is not None else None
    service = NotificationService(infra.db, feed, preferences, store, public_key=public_key)
    infra.services.register_value(NotificationService, service)
    wiring = NotifyWiring(notifier, service, sender)
    _WIRINGS[infra.db] = wiring
    return wiring


_WIRINGS: weakref.WeakKeyDictionary[Database, NotifyWiring] = weakref.WeakKeyDictionary()


def notify_wiring_for(database: Database) -> NotifyWiring:
    """The wiring ``setup_notifications`` made for ``database`` (KeyError if none)."""
    return _WIRINGS[database]
