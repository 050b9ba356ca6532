"""Provider webhooks: verify the signature, refuse replays, map events onto statuses.

Each provider reports what happened to a message after it accepted it (delivered,
bounced, opened, …) by calling the service back. Before an event may change anything:

- **SendGrid** (signed Event Webhook): an ECDSA P-256/SHA-256 signature over
  ``timestamp + raw body``, base64 in ``X-Twilio-Email-Event-Webhook-Signature``, the
  timestamp in ``X-Twilio-Email-Event-Webhook-Timestamp``, verified with the account's
  verification key (base64 DER or PEM) by the ``cryptography`` library.
- **Mailgun**: ``signature.signature`` is the hex HMAC-SHA256, keyed with the webhook
  signing key, of ``signature.timestamp + signature.token``, compared in constant time.

Then a replay is refused: the timestamp must be within ``tolerance_seconds`` of now (both
ways), and a signature (SendGrid) or token (Mailgun) seen within that window is refused
by the :class:`ReplayGuard`. The guard only has to remember one window, so it is bounded
by the rate of genuine calls. :class:`MemoryReplayGuard` covers one process; several
instances behind a balancer share a guard in Redis or rely on the receipts table's
(provider, event id) key (``corestone.email.tracking``), which makes applying an event
idempotent anyway.

Events come out as :class:`DeliveryEvent`, with corestone's message id when the message
carried one (SendGrid ``custom_args.corestone_id``, Mailgun ``user-variables``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

from corestone._extras import requires_extra
from corestone.errors import AuthenticationError, InvalidInputError

with requires_extra(__name__, "email"):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "CORESTONE_ID",
    "DeliveryEvent",
    "MailgunWebhook",
    "MemoryReplayGuard",
    "ReplayGuard",
    "SendGridWebhook",
    "TrackedStatus",
]

CORESTONE_ID: Final = "corestone_id"
"""The custom argument (SendGrid) / user variable (Mailgun: ``corestone-id``) carrying our id."""

TrackedStatus = Literal[
    "delivered", "deferred", "bounced", "complained", "opened", "clicked", "failed", "unsubscribed"
]

_MAX_BODY_BYTES: Final = 5 * 1024 * 1024
"""SendGrid batches events; a body larger than this is refused before it is parsed."""


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    """One thing a provider says happened to one message for one recipient."""

    provider: str
    event_id: str
    status: TrackedStatus
    recipient: str | None
    occurred_at: datetime
    message_id: str | None
    """corestone's id of the message, when the message carried it."""
    provider_message_id: str | None
    permanent: bool = False
    """For a bounce or failure: will never succeed (the address goes on the suppression list)."""
    detail: str = ""


class ReplayGuard(Protocol):
    def first_time(self, key: str, ttl_seconds: float) -> bool:
        """Remember ``key`` for ``ttl_seconds``; False if it was already remembered."""
        ...


class MemoryReplayGuard:
    """One process's memory of the signatures and tokens seen in the last window."""

    def __init__(
        self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    def first_time(self, key: str, ttl_seconds: float) -> bool:
        now = self._clock()
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)  # insertion order = expiry order (one ttl)
        if key in self._seen:
            return False
        if len(self._seen) >= self._max:
            self._seen.popitem(last=False)
        self._seen[key] = now + ttl_seconds
        return True


def _refuse(reason: str) -> AuthenticationError:
    return AuthenticationError(f"webhook refused: {reason}")


def _check_timestamp(raw: object, tolerance: float, now: float) -> float:
    try:
        stamp = float(str(raw))
    except ValueError:
        raise _refuse("the timestamp is not a number") from None
    if not abs(now - stamp) <= tolerance:  # also refuses NaN
        raise _refuse("the timestamp is outside the accepted window (a replay?)")
    return stamp


def _when(raw: Any) -> datetime:
    try:
        return datetime.fromtimestamp(float(raw), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(tz=UTC)


class SendGridWebhook:
    """Verify and read SendGrid's signed Event Webhook."""

    SIGNATURE_HEADER: Final = "X-Twilio-Email-Event-Webhook-Signature"
    TIMESTAMP_HEADER: Final = "X-Twilio-Email-Event-Webhook-Timestamp"

    def __init__(
        self,
        verification_key: str,
        *,
        replay_guard: ReplayGuard | None = None,
        tolerance_seconds: float = 300.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = _ecdsa_public_key(verification_key)
        self._guard = replay_guard if replay_guard is not None else MemoryReplayGuard()
        self._tolerance = tolerance_seconds
        self._now = wall_clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Raise AuthenticationError unless ``body`` is SendGrid's, signed, and not a replay."""
        lowered = {k.lower(): v for k, v in headers.items()}
        signature = lowered.get(self.SIGNATURE_HEADER.lower())
        stamp = lowered.get(self.TIMESTAMP_HEADER.lower())
        if not signature or not stamp:
            raise _refuse("the signature or timestamp header is missing")
        if len(body) > _MAX_BODY_BYTES:
            raise _refuse("the body is too large")
        _check_timestamp(stamp, self._tolerance, self._now())
        try:
            der = base64.b64decode(signature, validate=True)
            self._key.verify(der, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError):
            raise _refuse("the signature does not verify") from None
        if not self._guard.first_time(f"sendgrid:{signature}", 2 * self._tolerance):
            raise _refuse("this delivery was already received (a replay)")

    def events(self, body: bytes, headers: Mapping[str, str]) -> list[DeliveryEvent]:
        """Verify, then map each event; events with no status of ours are left out."""
        self.verify(body, headers)
        try:
            items = json.loads(body)
        except ValueError:
            raise InvalidInputError("body: not JSON", field="body", rule="json") from None
        if not isinstance(items, list):
            raise InvalidInputError(
                "body: expected a JSON array of events", field="body", rule="type"
            )
        found = []
        for item in items:
            if isinstance(item, dict) and (event := _sendgrid_event(item)) is not None:
                found.append(event)
        return found


_SENDGRID_STATUS: Final[dict[str, TrackedStatus]] = {
    "delivered": "delivered",
    "deferred": "deferred",
    "bounce": "bounced",
    "dropped": "failed",
    "spamreport": "complained",
    "open": "opened",
    "click": "clicked",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}


def _sendgrid_event(item: Mapping[str, Any]) -> DeliveryEvent | None:
    status = _SENDGRID_STATUS.get(str(item.get("event", "")))
    if status is None:
        return None  # processed, group_resubscribe, …: nothing for our statuses
    message_id = item.get(CORESTONE_ID)
    provider_id = item.get("sg_message_id")
    bounce_type = str(item.get("type", ""))  # "bounce" (hard) or "blocked" (soft)
    permanent = status == "complained" or (status == "bounced" and bounce_type != "blocked")
    return DeliveryEvent(
        provider="sendgrid",
        event_id=str(item.get("sg_event_id") or f"{provider_id}:{item.get('event')}"),
        status=status,
        recipient=str(item["email"]) if item.get("email") else None,
        occurred_at=_when(item.get("timestamp")),
        message_id=str(message_id) if message_id else None,
        provider_message_id=str(provider_id).split(".")[0] if provider_id else None,
        permanent=permanent,
        detail=str(item.get("reason") or item.get("response") or "")[:500],
    )


def _ecdsa_public_key(value: str) -> ec.EllipticCurvePublicKey:
    text = value.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"not a SendGrid verification key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not a SendGrid verification key: expected an EC public key")
    return key


class MailgunWebhook:
    """Verify and read Mailgun's webhooks (the JSON form with ``signature`` and ``event-data``)."""

    def __init__(
        self,
        signing_key: str,
        *,
        replay_guard: ReplayGuard | None = None,
        tolerance_seconds: float = 300.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not signing_key:
            raise ValueError("the Mailgun webhook signing key is empty")
        self._key = signing_key.encode()
        self._guard = replay_guard if replay_guard is not None else MemoryReplayGuard()
        self._tolerance = tolerance_seconds
        self._now = wall_clock

    def event(self, body: bytes) -> DeliveryEvent | None:
        """Verify and map one webhook call; None when the event has no status of ours."""
        if len(body) > _MAX_BODY_BYTES:
            raise _refuse("the body is too large")
        try:
            payload = json.loads(body)
        except ValueError:
            raise InvalidInputError("body: not JSON", field="body", rule="json") from None
        signature = payload.get("signature") if isinstance(payload, dict) else None
        if not isinstance(signature, dict):
            raise _refuse("the signature is missing")
        stamp, token, given = (
            str(signature.get(k, "")) for k in ("timestamp", "token", "signature")
        )
        if not stamp or not token or not given:
            raise _refuse("the signature is incomplete")
        _check_timestamp(stamp, self._tolerance, self._now())
        expected = hmac.new(self._key, (stamp + token).encode(), hashlib.sha256).hexdigest()
        # As bytes: compare_digest raises TypeError on a str that is not ASCII.
        if not hmac.compare_digest(expected.encode(), given.lower().encode()):
            raise _refuse("the signature does not verify")
        if not self._guard.first_time(f"mailgun:{token}", 2 * self._tolerance):
            raise _refuse("this token was already used (a replay)")
        data = payload.get("event-data")
        if not isinstance(data, dict):
            raise InvalidInputError("event-data: missing", field="event-data", rule="required")
        return _mailgun_event(data)


_MAILGUN_STATUS: Final[dict[str, TrackedStatus]] = {
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
    "rejected": "failed",
}


def _mailgun_event(data: Mapping[str, Any]) -> DeliveryEvent | None:
    kind = str(data.get("event", ""))
    severity = str(data.get("severity", ""))
    status: TrackedStatus | None
    if kind == "failed":
        status = "bounced" if severity == "permanent" else "deferred"
    else:
        status = _MAILGUN_STATUS.get(kind)
    if status is None:
        return None  # accepted, stored, …
    variables = data.get("user-variables")
    message_id = variables.get("corestone-id") if isinstance(variables, dict) else None
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    provider_id = headers.get("message-id") if isinstance(headers, dict) else None
    status_info = data.get("delivery-status")
    detail = (
        status_info.get("description") or status_info.get("message")
        if isinstance(status_info, dict)
        else ""
    )
    return DeliveryEvent(
        provider="mailgun",
        event_id=str(data.get("id") or f"{provider_id}:{kind}:{data.get('timestamp')}"),
        status=status,
        recipient=str(data["recipient"]) if data.get("recipient") else None,
        occurred_at=_when(data.get("timestamp")),
        message_id=str(message_id) if message_id else None,
        provider_message_id=str(provider_id) if provider_id else None,
        permanent=status in ("bounced", "complained")
        and (kind != "failed" or severity == "permanent"),
        detail=str(detail or data.get("reason") or "")[:500],
    )
