"""One push message on the wire: its checks, its encryption, its headers (RFC 8030/8291).

The body is RFC 8188's ``aes128gcm`` as RFC 8291 profiles it, made by http-ece (the
library pywebpush uses): a fresh ECDH key pair and salt per message, the shared secret
mixed with the subscription's 16-byte auth secret, one record of at most 4,096 bytes.
That record is the limit: push services must accept a 4,096-byte body (RFC 8030 §7.2),
whose 86-byte header (salt, record size, key id = the sender's public key), 16-byte tag
and 1-byte padding delimiter leave 3,993 bytes of plaintext (RFC 8291 §4).
"""

from __future__ import annotations

import email.utils
import os
import re
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any, Final, Literal, get_args

import orjson

from corestone._extras import requires_extra
from corestone.errors import InvalidInputError, PayloadTooLargeError

with requires_extra(__name__, "push"):
    import http_ece
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_PLAINTEXT_BYTES",
    "Urgency",
    "check_headers",
    "encrypt",
    "parse_retry_after",
    "plaintext_of",
]

MAX_BODY_BYTES: Final = 4096
_HEADER_BYTES: Final = 16 + 4 + 1 + 65  # salt, record size, key id length, key id
MAX_PLAINTEXT_BYTES: Final = MAX_BODY_BYTES - _HEADER_BYTES - 16 - 1
"""3,993: the most plaintext one 4,096-byte ``aes128gcm`` body can carry."""
MAX_TTL_SECONDS: Final = 2**31 - 1

Urgency = Literal["very-low", "low", "normal", "high"]
"""RFC 8030 §5.3."""
_URGENCIES: Final = frozenset(get_args(Urgency))
_TOPIC: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")  # RFC 8030 §5.4: base64url, ≤ 32 chars


def plaintext_of(payload: bytes | Mapping[str, Any]) -> bytes:
    """The bytes to encrypt: ``payload`` itself, or a mapping as compact JSON.

    PayloadTooLargeError (field ``payload``) past :data:`MAX_PLAINTEXT_BYTES`.
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        data = bytes(payload)
    elif isinstance(payload, Mapping):
        try:
            data = orjson.dumps(payload)
        except TypeError as error:
            raise InvalidInputError(
                f"payload: is not JSON-serialisable ({error})", field="payload"
            ) from None
    else:
        raise InvalidInputError("payload: must be bytes or a mapping", field="payload")
    if len(data) > MAX_PLAINTEXT_BYTES:
        raise PayloadTooLargeError(
            MAX_PLAINTEXT_BYTES,
            what=f"push payload of {len(data)} bytes (once encrypted, over 4096)",
            field="payload",
        )
    return data


def check_headers(ttl: object, urgency: object, topic: object) -> dict[str, str]:
    """``TTL``, ``Urgency`` and ``Topic`` headers; InvalidInputError naming a bad one."""
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL_SECONDS:
        raise InvalidInputError(
            f"ttl: must be a whole number of seconds from 0 to {MAX_TTL_SECONDS}", field="ttl"
        )
    if urgency not in _URGENCIES:
        raise InvalidInputError(
            f"urgency: must be one of {', '.join(sorted(_URGENCIES))}", field="urgency"
        )
    headers = {"TTL": str(ttl), "Urgency": str(urgency)}
    if topic is not None:
        if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
            raise InvalidInputError(
                "topic: must be 1-32 base64url characters (A-Z, a-z, 0-9, '-', '_')",
                field="topic",
            )
        headers["Topic"] = topic
    return headers


def encrypt(plaintext: bytes, public_key: bytes, auth_secret: bytes) -> bytes:
    """The ``aes128gcm`` body of ``plaintext`` for the browser holding ``public_key``.

    CPU-bound, about 0.5 ms (an ECDH key pair and agreement); the sender runs it off the
    event loop.
    """
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(
        plaintext,
        salt=os.urandom(16),
        private_key=ephemeral,
        dh=public_key,
        auth_secret=auth_secret,
        version="aes128gcm",
    )
    return body


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
