"""Push: Web Push to browsers (RFC 8030 / 8291 / 8292) with VAPID keys from settings.

The keys and the sender need the ``push`` extra; the subscriptions store needs the
database too (the ``postgres`` or ``sqlite`` extra). Names are imported on first use.
See docs/push.md.
"""

from typing import TYPE_CHECKING

from corestone import _lazy

if TYPE_CHECKING:
    from corestone.push.endpoints import EndpointPolicy
    from corestone.push.subscriptions import (
        PushSubscription,
        PushSubscriptionRecord,
        SubscriptionStore,
    )
    from corestone.push.vapid import VapidKeys
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
        "PushOutcome": "corestone.push.webpush",
        "PushResult": "corestone.push.webpush",
        "PushSubscription": "corestone.push.subscriptions",
        "PushSubscriptionRecord": "corestone.push.subscriptions",
        "SubscriptionStore": "corestone.push.subscriptions",
        "Urgency": "corestone.push.webpush",
        "VapidKeys": "corestone.push.vapid",
        "WebPushSender": "corestone.push.webpush",
    },
)

__all__ = [
    "MAX_PLAINTEXT_BYTES",
    "EndpointPolicy",
    "PushOutcome",
    "PushResult",
    "PushSubscription",
    "PushSubscriptionRecord",
    "SubscriptionStore",
    "Urgency",
    "VapidKeys",
    "WebPushSender",
]
