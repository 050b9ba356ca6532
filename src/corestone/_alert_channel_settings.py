"""The alert delivery settings: channels, grouping timers, silences (``CORESTONE_ALERTS_…``).

Kept apart from :mod:`corestone.config` like the other mixins. The log channel is always
on; the webhook is on when ``CORESTONE_ALERTS_WEBHOOK_URL`` is set (and then needs
``CORESTONE_ALERTS_WEBHOOK_SECRET``, 16 characters or more, to sign with); email when
``CORESTONE_ALERTS_EMAIL_TO`` lists recipients (with ``CORESTONE_ALERTS_EMAIL_FROM``);
in-app when ``CORESTONE_ALERTS_INAPP`` is true and the application supplies recipients.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from corestone.observability.alerts.grouping import Timing

__all__ = ["ALERT_SECRET_FIELDS", "AlertChannelSettings"]

ALERT_SECRET_FIELDS: Final = frozenset({"alerts_webhook_secret"})
"""Shown as ``'***'`` in configuration errors."""

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class AlertChannelSettings(BaseModel):
    """Where alert notifications go and how they are grouped (a mixin of ``Settings``)."""

    alerts_webhook_url: str | None = Field(
        None,
        description="POST each notification here (Alertmanager webhook v4 JSON, signed)",
        examples=["https://hooks.example.com/alerts"],
    )
    alerts_webhook_secret: SecretStr | None = Field(
        None,
        description="the HMAC-SHA256 key of X-Corestone-Signature (at least 16 characters)",
        examples=["<32 random characters>"],
    )
    alerts_email_to: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated recipients of alert emails (empty: no email)",
        examples=["ops@example.com,oncall@example.com"],
    )
    alerts_email_from: str | None = Field(
        None, description="the sender of alert emails", examples=["alerts@example.com"]
    )
    alerts_inapp: bool = Field(
        False, description="notify workspace owners in the app", examples=["true"]
    )
    alerts_group_by: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["alertname"],
        description="labels whose values make a group (one notification)",
        examples=["alertname,severity"],
    )
    alerts_group_wait_seconds: float = Field(10.0, ge=0, le=3600, examples=[10])
    alerts_group_interval_seconds: float = Field(60.0, ge=0, le=86400, examples=[60])
    alerts_repeat_interval_seconds: float = Field(14400.0, ge=60, le=7 * 86400, examples=[14400])
    alerts_send_resolved: bool = Field(True, examples=["false"])
    alerts_silence_max_days: float = Field(
        30.0, gt=0, le=365, description="the longest a silence may last", examples=[30]
    )

    @field_validator("alerts_webhook_url", "alerts_email_from", mode="before")
    @classmethod
    def _alerts_empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("alerts_email_to", "alerts_group_by", mode="before")
    @classmethod
    def _alerts_lists(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("alerts_webhook_url")
    @classmethod
    def _alerts_webhook_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.strip()

    @field_validator("alerts_group_by")
    @classmethod
    def _alerts_group_by(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _LABEL_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a label name")
        return value

    @model_validator(mode="after")
    def _alerts_channels_complete(self) -> AlertChannelSettings:
        secret = self.alerts_webhook_secret
        if self.alerts_webhook_url is not None and (
            secret is None or len(secret.get_secret_value()) < 16
        ):
            raise ValueError(
                "CORESTONE_ALERTS_WEBHOOK_URL needs CORESTONE_ALERTS_WEBHOOK_SECRET "
                "(at least 16 characters): every webhook request is signed"
            )
        if self.alerts_email_to and self.alerts_email_from is None:
            raise ValueError("CORESTONE_ALERTS_EMAIL_TO needs CORESTONE_ALERTS_EMAIL_FROM")
        return self

    @property
    def alert_timing(self) -> Timing:
        """The grouping timers as the dispatcher takes them."""
        return Timing(
            group_by=tuple(self.alerts_group_by),
            group_wait=timedelta(seconds=self.alerts_group_wait_seconds),
            group_interval=timedelta(seconds=self.alerts_group_interval_seconds),
            repeat_interval=timedelta(seconds=self.alerts_repeat_interval_seconds),
            send_resolved=self.alerts_send_resolved,
        )
