"""The Web Push settings: ``CORESTONE_VAPID_PRIVATE_KEY`` and ``CORESTONE_VAPID_SUBJECT``.

Kept apart from :mod:`corestone.config` (and free of the ``push`` extra) because the
settings of a process that sends no push message must still parse. The private key is
checked with the parser that will use it when the ``push`` extra is installed; without
it nothing could sign anyway, and :class:`corestone.push.VapidKeys` says which extra to
install.

The subject is the contact a push service may use to reach the sender (RFC 8292 §2.1):
a ``mailto:`` address or an ``https:`` URL.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Final
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from corestone.errors import MissingExtraError

__all__ = ["PUSH_SECRET_FIELDS", "PushSettings", "check_vapid_subject"]

PUSH_SECRET_FIELDS: Final = frozenset({"vapid_private_key"})
"""Shown as ``'***'`` in configuration errors (SecretStr masks them everywhere else)."""

# A mail address as a contact: something@a.domain, no spaces, no second '@', no query.
_MAILTO = re.compile(
    r"mailto:[^@\s?#/]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")


def check_vapid_subject(subject: str) -> str:
    """``subject`` if it is ``mailto:user@example.com`` or ``https://example.com[/…]``.

    Raise ValueError saying what was expected otherwise. A push service reads it as the
    way to reach whoever sends; Apple's refuses a VAPID token without one.
    """
    if _MAILTO.fullmatch(subject):
        return subject
    if subject.startswith("https://"):
        try:
            parts = urlsplit(subject)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise ValueError("is not a valid https:// URL (a port must be a number)") from None
        if parts.hostname and _HOST.fullmatch(parts.hostname) and "@" not in parts.netloc:
            return subject
        raise ValueError("must be an https:// URL of a public host name, without user info")
    raise ValueError("must be mailto:you@example.com or an https:// URL (RFC 8292 §2.1)")


class PushSettings(BaseModel):
    """The Web Push settings of :class:`~corestone.Settings` (``CORESTONE_`` prefixed there).

    A mixin, like the email settings; read them on ``Settings``.
    """

    vapid_private_key: SecretStr | None = Field(
        None,
        description=(
            "the VAPID private key (P-256): base64url of its 32 bytes, or PEM; "
            "`corestone push keys` makes one"
        ),
        examples=["<the line corestone push keys prints>"],
    )
    vapid_subject: str | None = Field(
        None,
        description="the contact a push service may use: mailto: or https:",
        examples=["mailto:ops@example.com"],
    )

    @field_validator("vapid_private_key", "vapid_subject", mode="before")
    @classmethod
    def _vapid_empty_is_unset(cls, value: Any) -> Any:
        # KEY= in an .env file means "not configured", never an empty key.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("vapid_subject")
    @classmethod
    def _vapid_subject(cls, value: str | None) -> str | None:
        return None if value is None else check_vapid_subject(value.strip())

    @field_validator("vapid_private_key")
    @classmethod
    def _vapid_private_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # The signer's own parser, so the setting accepts exactly what it will use.
        with contextlib.suppress(MissingExtraError):
            from corestone.push.vapid import parse_private_key

            parse_private_key(value.get_secret_value())
        return value

    @property
    def vapid_public_key(self) -> str | None:
        """The public key of ``vapid_private_key`` in ``applicationServerKey`` form (the
        base64url of its 65-byte point), or None when no key is set. Needs the ``push``
        extra (MissingExtraError names it)."""
        if self.vapid_private_key is None:
            return None
        from corestone.push.vapid import public_key_of

        return public_key_of(self.vapid_private_key.get_secret_value())

    @model_validator(mode="after")
    def _vapid_key_needs_subject(self) -> PushSettings:
        if self.vapid_private_key is not None and self.vapid_subject is None:
            raise ValueError(
                "CORESTONE_VAPID_PRIVATE_KEY needs CORESTONE_VAPID_SUBJECT "
                "(mailto:you@example.com or an https:// URL): push services want a contact"
            )
        return self
