"""VAPID (RFC 8292): the application server's P-256 key pair and the tokens it signs.

A browser subscribes with ``pushManager.subscribe({applicationServerKey})``: the public
key as the base64url of its uncompressed point (65 bytes, ``0x04 || X || Y``), which
:attr:`VapidKeys.application_server_key` gives. Every push request then carries
``Authorization: vapid t=<JWT>, k=<that key>``; the push service checks the JWT's ES256
signature against ``k``, that ``aud`` is its own origin and that ``exp`` is at most 24
hours away, and refuses a subscription made for another key.

The JWT is signed by py-vapid (the library pywebpush uses); the key is read here, from
what ``CORESTONE_VAPID_PRIVATE_KEY`` holds: the base64url of the 32-byte private number
(what ``corestone push keys`` prints, and what most Web Push tools print), or a PEM
(PKCS#8 or SEC 1; ``\\n`` escapes stand for line breaks, so it fits one variable).
"""

from __future__ import annotations

import base64
import binascii
from typing import Final, Protocol

from pydantic import SecretStr

from corestone._extras import requires_extra
from corestone.errors import ConfigurationError
from corestone.push._subject import check_vapid_subject

with requires_extra(__name__, "push"):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from py_vapid import Vapid02


class _VapidSettings(Protocol):
    """What :meth:`VapidKeys.from_settings` reads (``corestone.Settings`` has it)."""

    @property
    def vapid_private_key(self) -> SecretStr | None: ...

    @property
    def vapid_subject(self) -> str | None: ...


__all__ = [
    "MAX_TOKEN_SECONDS",
    "VapidKeys",
    "b64url_decode",
    "b64url_encode",
    "parse_private_key",
    "public_key_of",
]

MAX_TOKEN_SECONDS: Final = 24 * 3600
"""RFC 8292 §2: a token's ``exp`` is no more than 24 hours after the request."""


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as Web Push writes keys and tokens."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding; ValueError for anything else (standard base64's
    ``+`` and ``/`` included: a browser's ``toJSON()`` never writes them)."""
    if not text.isascii():
        raise ValueError("is not base64url")
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1 or not all(c.isalnum() or c in "-_" for c in stripped):
        raise ValueError("is not base64url")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("is not base64url") from None


def parse_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key in ``text``: base64url of 32 bytes, or PEM.

    ValueError names what was expected and never quotes the key.
    """
    text = text.strip()
    if text.startswith("-----BEGIN"):
        pem = text.replace("\\n", "\n").encode("ascii", "replace")
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise ValueError("is not a readable unencrypted PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("is not a P-256 (prime256v1) key, which VAPID requires")
        return key
    try:
        raw = b64url_decode(text)
    except ValueError:
        raise ValueError(
            "is neither PEM nor the base64url of a 32-byte key (corestone push keys makes one)"
        ) from None
    if len(raw) != 32:
        raise ValueError(f"decodes to {len(raw)} bytes; a P-256 private key is 32")
    number = int.from_bytes(raw, "big")
    try:
        return ec.derive_private_key(number, ec.SECP256R1())
    except ValueError:
        raise ValueError("is not a valid P-256 private key (out of the curve's range)") from None


def _point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def public_key_of(private_key: str) -> str:
    """The ``applicationServerKey`` (base64url of the 65-byte point) of a private key in
    any form :func:`parse_private_key` reads."""
    return b64url_encode(_point(parse_private_key(private_key)))


class VapidKeys:
    """An application server's VAPID key pair and contact subject.

    Never shows the private key in ``repr``; :meth:`private_key_text` gives it only to
    whoever asks by name (``corestone push keys`` prints it once, for the environment).
    """

    __slots__ = ("_key", "_public", "_signer", "subject")

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, subject: str) -> None:
        if private_key.curve.name != "secp256r1":
            raise ValueError("VAPID keys are P-256 (prime256v1)")
        self._key = private_key
        self.subject = check_vapid_subject(subject)
        self._public = _point(private_key)
        # The subject was checked above, by the rule the settings use (RFC 8292's: mailto:
        # or https:); py-vapid's stricter pattern would refuse an https URL with a path.
        self._signer = Vapid02(private_key, conf={"no-strict": True})

    @classmethod
    def generate(cls, subject: str) -> VapidKeys:
        """A fresh key pair."""
        return cls(ec.generate_private_key(ec.SECP256R1()), subject)

    @classmethod
    def from_private_key(cls, text: str, subject: str) -> VapidKeys:
        """From the key as ``CORESTONE_VAPID_PRIVATE_KEY`` holds it (:func:`parse_private_key`)."""
        return cls(parse_private_key(text), subject)

    @classmethod
    def from_settings(cls, settings: _VapidSettings) -> VapidKeys:
        """From ``CORESTONE_VAPID_PRIVATE_KEY`` and ``_SUBJECT``; ConfigurationError if unset."""
        if settings.vapid_private_key is None or settings.vapid_subject is None:
            raise ConfigurationError(
                "Web Push needs CORESTONE_VAPID_PRIVATE_KEY and CORESTONE_VAPID_SUBJECT "
                "(`corestone push keys` prints a new pair)"
            )
        return cls.from_private_key(
            settings.vapid_private_key.get_secret_value(), settings.vapid_subject
        )

    @property
    def public_key(self) -> bytes:
        """The public key as an uncompressed P-256 point (65 bytes)."""
        return self._public

    @property
    def application_server_key(self) -> str:
        """The public key for ``pushManager.subscribe``: base64url of the 65-byte point."""
        return b64url_encode(self._public)

    def private_key_text(self) -> str:
        """The private key as base64url of its 32 bytes: ``CORESTONE_VAPID_PRIVATE_KEY``'s form."""
        number = self._key.private_numbers().private_value
        return b64url_encode(number.to_bytes(32, "big"))

    def authorization(self, audience: str, expires_at: int) -> str:
        """``vapid t=<JWT>, k=<public key>`` for requests to the push service at ``audience``.

        ``audience`` is the push resource's origin (``https://host[:port]``), ``expires_at``
        the token's ``exp`` in Unix seconds. Signing takes about 0.2 ms (ES256).
        """
        claims = {"aud": audience, "exp": int(expires_at), "sub": self.subject}
        header: str = self._signer.sign(claims)["Authorization"]
        return header

    def __repr__(self) -> str:  # the private key must never reach a log
        return f"VapidKeys(public={self.application_server_key!r}, subject={self.subject!r})"
