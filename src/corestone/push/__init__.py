"""Push: live streams (Server-Sent Events from the outbox) and Web Push to browsers.

Live streams (``add_live_streams``, :class:`EventFeed`) need the database and, across
processes, Redis. Web Push (RFC 8030 / 8291 / 8292, VAPID keys from settings): the keys
and the sender need the ``push`` extra; the subscriptions store needs the database too
(the ``postgres`` or ``sqlite`` extra). Names are imported on first use. See docs/push.md.
"""

from typing import TYPE_CHECKING

from corestone import _lazy

if TYPE_CHECKING:
    from corestone.push.endpoints import EndpointPolicy
    from corestone.push.feed import EventFeed
    from corestone.push.live import add_live_streams, add_live_wakes
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
        "EndpointPolicy": "corestone.push.endpoints",
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
    "EndpointPolicy",
    "EventFeed",
    "LocalWakes",
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
