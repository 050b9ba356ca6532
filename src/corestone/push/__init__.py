"""Push: live streams (Server-Sent Events from the outbox), Web Push to browsers
(RFC 8030 / 8291 / 8292, VAPID keys from settings), and notifications (a per-user feed,
preferences per kind, a Notifier routing each one to the feed, email and Web Push).

Live streams (``add_live_streams``, :class:`EventFeed`) need the database and, across
processes, Redis. The Web Push keys and sender need the ``push`` extra; the stores need
the database too (the ``postgres`` or ``sqlite`` extra). Names are imported on first
use. See docs/push.md.
"""

from typing import TYPE_CHECKING

from corestone import _lazy

if TYPE_CHECKING:
    from corestone.push.endpoints import EndpointPolicy
    from corestone.push.feed import EventFeed
    from corestone.push.live import add_live_streams, add_live_wakes
    from corestone.push.notifications import Notification, NotificationFeed, NotificationPage
    from corestone.push.notifier import Notice, Notifier, NotifyResult
    from corestone.push.preferences import Channels, PreferenceStore
    from corestone.push.subscriptions import (
        PushSubscription,
        PushSubscriptionRecord,
        SubscriptionStore,
    )
    from corestone.push.vapid import VapidKeys
    from corestone.push.wakes import LocalWakes, RedisWakes
    from corestone.push.webpush import (
        MAX_PLAINTEXT_BYTES,
        PushOutcome,
        PushResult,
        Urgency,
        WebPushSender,
    )

__getattr__, __dir__ = _lazy.lazy_exports(
    __name__,
    {
        "MAX_PLAINTEXT_BYTES": "corestone.push.webpush",
        "Channels": "corestone.push.preferences",
        "EndpointPolicy": "corestone.push.endpoints",
        "Notice": "corestone.push.notifier",
        "Notification": "corestone.push.notifications",
        "NotificationFeed": "corestone.push.notifications",
        "NotificationPage": "corestone.push.notifications",
        "Notifier": "corestone.push.notifier",
        "NotifyResult": "corestone.push.notifier",
        "PreferenceStore": "corestone.push.preferences",
        "EventFeed": "corestone.push.feed",
        "LocalWakes": "corestone.push.wakes",
        "PushOutcome": "corestone.push.webpush",
        "PushResult": "corestone.push.webpush",
        "PushSubscription": "corestone.push.subscriptions",
        "PushSubscriptionRecord": "corestone.push.subscriptions",
        "RedisWakes": "corestone.push.wakes",
        "SubscriptionStore": "corestone.push.subscriptions",
        "Urgency": "corestone.push.webpush",
        "VapidKeys": "corestone.push.vapid",
        "WebPushSender": "corestone.push.webpush",
        "add_live_streams": "corestone.push.live",
        "add_live_wakes": "corestone.push.live",
    },
)

__all__ = [
    "MAX_PLAINTEXT_BYTES",
    "Channels",
    "EndpointPolicy",
    "EventFeed",
    "LocalWakes",
    "Notice",
    "Notification",
    "NotificationFeed",
    "NotificationPage",
    "Notifier",
    "NotifyResult",
    "PreferenceStore",
    "PushOutcome",
    "PushResult",
    "PushSubscription",
    "PushSubscriptionRecord",
    "RedisWakes",
    "SubscriptionStore",
    "Urgency",
    "VapidKeys",
    "WebPushSender",
    "add_live_streams",
    "add_live_wakes",
]
