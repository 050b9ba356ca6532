"""One-click unsubscribe (RFC 8058): signed links, and the headers bulk mail carries.

A bulk message to one recipient gets two headers::

    List-Unsubscribe: <https://app.example/email/unsubscribe?token=…>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

A mail client's "unsubscribe" button then POSTs ``List-Unsubscribe=One-Click`` to that
URL, and the endpoint (``corestone.web.email.unsubscribe_router``) puts the address on
the suppression list. The token is the whole authorisation, so it is signed: an HMAC-SHA256
(keyed with the application's secret) over the address, the list and an expiry. A token
for one address cannot be edited into one for another, and an old one stops working.
Nothing in it is secret (the address is readable in the link, as it is in the mail).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from urllib.parse import quote

from corestone.email.message import EmailMessage
from corestone.errors import InvalidInputError

__all__ = ["ONE_CLICK", "UnsubscribeRequest", "UnsubscribeTokens", "with_unsubscribe"]

ONE_CLICK: Final = "List-Unsubscribe=One-Click"
"""The ``List-Unsubscribe-Post`` value, and the body a one-click POST carries (RFC 8058 §3.1)."""

_CONTEXT: Final = b"corestone.email.unsubscribe.v1\x00"


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    """What a verified token asks: take ``address`` off ``list_id``."""

    address: str
    list_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _refused(rule: str, message: str) -> InvalidInputError:
    return InvalidInputError(f"token: {message}", field="token", rule=rule)


class UnsubscribeTokens:
    """Issue and verify unsubscribe tokens, per address and list, expiring."""

    def __init__(
        self,
        secret: bytes,
        *,
        ttl_seconds: float = 60 * 24 * 3600,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the unsubscribe secret must be at least 16 bytes")
        # A key of its own: a token is never valid as any other signed value of the app.
        self._key = hmac.new(secret, _CONTEXT, hashlib.sha256).digest()
        self._ttl = ttl_seconds
        self._now = wall_clock

    def issue(self, address: str, list_id: str) -> str:
        """A token for ``address`` (compared lower-cased) and ``list_id``."""
        expires = int(self._now() + self._ttl)
        payload = _b64(json.dumps([address.lower(), list_id, expires]).encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str) -> UnsubscribeRequest:
        """The request a token carries; InvalidInputError (``field="token"``) if forged or old."""
        payload, _, signature = token.partition(".")
        if not payload or not signature or len(token) > 2048:
            raise _refused("format", "not an unsubscribe token")
        # As bytes: compare_digest raises TypeError on a str that is not ASCII.
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            raise _refused("signature", "the signature does not match (a forged or altered link)")
        try:
            address, list_id, expires = json.loads(_unb64(payload))
        except (ValueError, binascii.Error, TypeError):
            raise _refused("format", "not an unsubscribe token") from None
        if not isinstance(expires, int) or expires < self._now():
            raise _refused("expired", "the link has expired")
        return UnsubscribeRequest(str(address), str(list_id))

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


def with_unsubscribe(
    message: EmailMessage, tokens: UnsubscribeTokens, endpoint: str, *, list_id: str
) -> EmailMessage:
    """``message`` with the one-click ``List-Unsubscribe`` headers for its one recipient.

    A token names one address, so a bulk send builds one message per recipient (as
    provider-native batches do anyway); a message to several is refused.
    """
    recipients = message.recipients
    if len(recipients) != 1:
        raise InvalidInputError(
            "to: an unsubscribe link is per recipient; send one message each",
            field="to",
            rule="one_recipient",
        )
    # Every character str.splitlines() breaks at, as EmailMessage.build refuses: the
    # header is added after build, so nothing else looks at it before the provider.
    breaks = "\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029<>"
    if any(c in endpoint for c in breaks) or not endpoint.startswith(("https://", "http://")):
        raise ValueError(f"not an unsubscribe endpoint URL: {endpoint!r}")
    token = tokens.issue(recipients[0].email, list_id)
    separator = "&" if "?" in endpoint else "?"
    headers = {
        **message.headers,
        "List-Unsubscribe": f"<{endpoint}{separator}token={quote(token, safe='')}>",
        "List-Unsubscribe-Post": ONE_CLICK,
    }
    return dataclasses.replace(message, headers=MappingProxyType(headers))
