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
from typing import Any, Final

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from corestone.errors import MissingExtraError
from corestone.push._subject import check_vapid_subject

__all__ = ["PUSH_SECRET_FIELDS", "PushSettings"]

PUSH_SECRET_FIELDS: Final = frozenset({"vapid_private_key"})
"""Shown as ``'***'`` in configuration errors (SecretStr masks them everywhere else)."""


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
