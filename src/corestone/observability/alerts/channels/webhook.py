"""The webhook channel: Alertmanager's webhook body, HMAC-signed, behind a breaker, retried.

The body is Alertmanager's webhook payload, version 4 (``version``, ``groupKey``,
``status``, ``receiver``, ``groupLabels``, ``commonLabels``, ``commonAnnotations``,
``externalURL``, ``alerts[]`` with ``status``, ``labels``, ``annotations``, ``startsAt``,
``endsAt``, ``fingerprint``), so a receiver written for Alertmanager reads it unchanged.

Every request carries ``X-Corestone-Signature: t=<unix seconds>,v1=<hex>``, where the
hex is HMAC-SHA256 under the shared secret of ``"<t>." + body`` (the scheme Stripe uses:
the timestamp inside the MAC stops a captured request from being replayed later).
:func:`verify_signature` is the receiver's check.

Each request goes through the breaker ``alerts-webhook``: a transport error, a timeout,
a 429 or a 5xx count against it and are retried with full-jitter backoff up to
``attempts`` times; another 4xx is final at once (the request itself is wrong). What the
breaker refuses is not retried. A final failure raises
:class:`~._base.DeliveryError` with the attempts made; the dispatcher records it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final

import orjson

from corestone._extras import requires_extra
from corestone.errors import CircuitOpenError
from corestone.observability.alerts.channels._base import AlertNotification, DeliveryError
from corestone.observability.alerts.model import Alert, AlertState
from corestone.resilience.registry import BreakerRegistry
from corestone.resilience.retry import Retry

with requires_extra(__name__, "alerts"):
    import httpx

__all__ = [
    "BREAKER",
    "SIGNATURE_HEADER",
    "WebhookChannel",
    "sign",
    "verify_signature",
    "webhook_body",
]

BREAKER: Final = "alerts-webhook"
SIGNATURE_HEADER: Final = "X-Corestone-Signature"
_ZERO_TIME: Final = "0001-01-01T00:00:00Z"
_REASON_MAX: Final = 300


def _time(moment: datetime | None) -> str:
    return _ZERO_TIME if moment is None else moment.isoformat().replace("+00:00", "Z")


def _alert_json(alert: Alert) -> dict[str, Any]:
    resolved = alert.state is AlertState.RESOLVED
    return {
        "status": "resolved" if resolved else "firing",
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": _time(alert.fired_at or alert.active_since),
        "endsAt": _time(alert.resolved_at if resolved else None),
        "generatorURL": "",
        "fingerprint": alert.fingerprint,
    }


def webhook_body(notification: AlertNotification, *, external_url: str = "") -> bytes:
    """The JSON body of ``notification`` (Alertmanager webhook version 4)."""
    return orjson.dumps(
        {
            "version": "4",
            "groupKey": notification.group_key,
            "truncatedAlerts": 0,
            "status": notification.status,
            "receiver": notification.receiver,
            "groupLabels": dict(notification.group_labels),
            "commonLabels": notification.common_labels,
            "commonAnnotations": notification.common_annotations,
            "externalURL": external_url,
            "alerts": [_alert_json(alert) for alert in notification.alerts],
        }
    )


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Corestone-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: bytes,
    header: str | None,
    body: bytes,
    *,
    now: float | None = None,
    tolerance_seconds: float = 300.0,
) -> bool:
    """Whether ``header`` signs ``body`` under ``secret``, made within ``tolerance_seconds``.

    For receivers: compare in constant time, and refuse old timestamps (replays).
    """
    if not header:
        return False
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    # ASCII digits only, and few: "²" is a digit to isdigit() but not to int(), and
    # int() refuses more than 4300 digits; either would raise in the receiver's check.
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or not given:
        return False
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance_seconds:
        return False
    expected = sign(secret, body, int(stamp)).rsplit("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


class _RetryableError(Exception):
    """A response or transport failure worth another attempt."""


class WebhookChannel:
    """POSTs each notification to ``url``; see the module doc for signing and retries."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        breakers: BreakerRegistry,
        client: httpx.AsyncClient | None = None,
        timeout_seconds: float = 5.0,
        attempts: int = 4,
        initial_wait_seconds: float = 0.5,
        max_wait_seconds: float = 10.0,
        external_url: str = "",
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the webhook secret must be at least 16 bytes")
        self.url, self.external_url = url, external_url
        self._secret = secret
        self.breaker = breakers.get(BREAKER)
        self.retry = Retry(
            attempts=attempts,
            initial_wait_seconds=initial_wait_seconds,
            max_wait_seconds=max_wait_seconds,
            retry_on=(_RetryableError,),
            sleep=sleep,
        )
        self.wall_clock = wall_clock
        self._owns_client = client is None
        # No redirects: a signed alert goes where it was configured to, nowhere else.
        self._client = client or httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def send(self, notification: AlertNotification) -> int:
        body = webhook_body(notification, external_url=self.external_url)
        tries = 0

        async def attempt(_n: int) -> None:
            nonlocal tries
            tries += 1
            await self.breaker.acall(self._post, body)

        try:
            await self.retry.run(attempt)
        except CircuitOpenError as error:
            raise DeliveryError(f"circuit open: {error}", attempts=tries) from error
        except (_RetryableError, DeliveryError) as error:
            raise DeliveryError(str(error), attempts=tries) from error
        return tries

    async def _post(self, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "corestone-alerts",
            SIGNATURE_HEADER: sign(self._secret, body, int(self.wall_clock())),
        }
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise _RetryableError(f"{type(error).__name__}: {error}"[:_REASON_MAX]) from error
        if response.is_success:
            return
        reason = f"HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code == 429 or response.status_code >= 500:
            raise _RetryableError(reason)
        raise DeliveryError(reason, attempts=1)
