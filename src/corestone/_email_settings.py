"""The grammar of ``CORESTONE_EMAIL_PROVIDERS`` and ``CORESTONE_EMAIL_RATE_LIMITS``.

Kept apart from :mod:`corestone.config` (and free of the ``email`` extra) because the
settings of a process that sends no mail must still parse, and because the doctor and the
email wiring read the same rules.

``EMAIL_PROVIDERS`` is a comma-separated list of provider names, one strategy per value:

- ``smtp,sendgrid``: **failover**, every message tries the providers in this order;
- ``smtp:3,sendgrid:1``: **weighted** round-robin, the first provider of each message is
  picked by weight (the others follow in the listed order as failover).

Either every entry has a weight or none has: a mix is refused, since no reading of it is
obviously right. Names are case-insensitive, blanks around entries are ignored; an
empty entry, an unknown name, a repeated name or a weight that is not a whole number
from 1 to 1000 is refused. ``EMAIL_RATE_LIMITS`` is ``name=messages per second``, e.g.
``sendgrid=100,ses=14``, for listed providers only.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_serializer, field_validator
from pydantic_settings import NoDecode

from corestone.errors import MissingExtraError

__all__ = [
    "EMAIL_PROVIDER_NAMES",
    "EMAIL_SECRET_FIELDS",
    "EMAIL_URL_FIELDS",
    "MAX_WEIGHT",
    "REQUIRED_SETTINGS",
    "EmailSettings",
    "ProviderChoice",
    "format_providers",
    "parse_providers",
    "parse_rate_limits",
    "strategy_of",
]

EMAIL_PROVIDER_NAMES: Final = ("file", "mailgun", "sendgrid", "ses", "smtp")
MAX_WEIGHT: Final = 1000

REQUIRED_SETTINGS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "file": (),
        "mailgun": ("mailgun_api_key", "mailgun_domain"),
        "sendgrid": ("sendgrid_api_key",),
        # Keys optional: without them botocore's default chain finds credentials
        # (environment, shared files, container or instance role).
        "ses": ("ses_region",),
        "smtp": ("smtp_url",),
    }
)
"""The settings each provider cannot send without (the file provider has a default folder)."""

_SHOWN_CHARS = 40

EMAIL_SECRET_FIELDS: Final = frozenset(
    {
        "mailgun_api_key",
        "mailgun_webhook_signing_key",
        "sendgrid_api_key",
        "sendgrid_webhook_public_key",  # not secret, but a screenful of base64 in an error
        "ses_secret_access_key",
        "ses_session_token",
    }
)
"""Shown as ``'***'`` in configuration errors (SecretStr masks them everywhere else)."""
EMAIL_URL_FIELDS: Final = frozenset({"mailgun_base_url", "sendgrid_base_url", "ses_endpoint_url"})
"""Masked like the other URLs in every representation."""

_OPTIONAL_EMAIL_FIELDS = (
    "mailgun_api_key",
    "mailgun_base_url",
    "mailgun_domain",
    "mailgun_webhook_signing_key",
    "sendgrid_api_key",
    "sendgrid_base_url",
    "sendgrid_webhook_public_key",
    "ses_access_key_id",
    "ses_configuration_set",
    "ses_endpoint_url",
    "ses_region",
    "ses_secret_access_key",
    "ses_session_token",
)


# Names go into request URLs (``email.<region>.amazonaws.com``, ``/v3/<domain>/messages``):
# anything but these characters would change which host or path is asked.
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)*[A-Za-z0-9-]{1,63}")
_AWS_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}")
_AWS_KEY_ID = re.compile(r"[A-Za-z0-9_]{16,128}")  # AWS: \w, 16 to 128 characters
_AWS_CONFIGURATION_SET = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    """One entry of ``EMAIL_PROVIDERS``: a provider's name and its weight (None: failover)."""

    name: str
    weight: int | None = None

    def __str__(self) -> str:
        return self.name if self.weight is None else f"{self.name}:{self.weight}"


class EmailSettings(BaseModel):
    """The email settings of :class:`~corestone.Settings` (``CORESTONE_`` prefixed there).

    A mixin, so that config.py stays one readable module; read them on ``Settings``.
    The rule across them and ``smtp_url`` (a listed provider needs its credentials) is
    on ``Settings``, which has every field.
    """

    email_providers: Annotated[tuple[ProviderChoice, ...], NoDecode] = Field(
        (ProviderChoice("file"),),
        description="failover order (smtp,sendgrid) or weighted round-robin (smtp:3,sendgrid:1)",
        examples=["smtp,sendgrid"],
    )
    email_rate_limits: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="messages per second, per listed provider (one limit per process)",
        examples=["sendgrid=100,ses=14"],
    )
    email_file_dir: str = Field(
        "var/mail",
        min_length=1,
        description="where the file provider writes",
        examples=["var/mail"],
    )
    sendgrid_api_key: SecretStr | None = Field(None, examples=["SG.xxxx"])
    sendgrid_base_url: str | None = Field(
        None,
        description="default https://api.sendgrid.com",
        examples=["https://api.eu.sendgrid.com"],
    )
    sendgrid_webhook_public_key: str | None = Field(
        None,
        description="the Event Webhook's verification key (base64 DER or PEM)",
        examples=["MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE…"],
    )
    mailgun_api_key: SecretStr | None = Field(None, examples=["key-xxxx"])
    mailgun_domain: str | None = Field(None, examples=["mg.example.com"])
    mailgun_region: Literal["us", "eu"] = Field("us", examples=["eu"])
    mailgun_base_url: str | None = Field(
        None,
        description="overrides the region's API address",
        examples=["https://api.eu.mailgun.net"],
    )
    mailgun_webhook_signing_key: SecretStr | None = Field(None, examples=["xxxx"])
    ses_region: str | None = Field(None, examples=["eu-west-1"])
    ses_access_key_id: str | None = Field(None, examples=["AKIAIOSFODNN7EXAMPLE"])
    ses_secret_access_key: SecretStr | None = Field(None, examples=["xxxx"])
    ses_session_token: SecretStr | None = Field(
        None, description="with temporary credentials", examples=["xxxx"]
    )
    ses_configuration_set: str | None = Field(None, examples=["events"])
    ses_endpoint_url: str | None = Field(
        None,
        description="default https://email.<region>.amazonaws.com",
        examples=["https://email.eu-west-1.amazonaws.com"],
    )

    @field_validator(*_OPTIONAL_EMAIL_FIELDS, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # An exported-but-empty variable (KEY= in an .env file) means "not configured",
        # never an empty key that would fail at the first send.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("email_providers", mode="before")
    @classmethod
    def _parse_providers(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            value = ",".join(str(item) for item in value)
        return parse_providers(value) if isinstance(value, str) else value

    @field_validator("email_rate_limits", mode="before")
    @classmethod
    def _parse_rate_limits(cls, value: Any) -> Any:
        if isinstance(value, dict):  # Settings(email_rate_limits={...}): the same rules
            value = ",".join(f"{name}={rate}" for name, rate in value.items())
        return parse_rate_limits(value) if isinstance(value, str) else value

    @field_validator("sendgrid_base_url", "mailgun_base_url", "ses_endpoint_url")
    @classmethod
    def _http_scheme(cls, value: str | None) -> str | None:
        return None if value is None else _require_http(value)

    @field_validator("mailgun_domain")
    @classmethod
    def _mailgun_domain(cls, value: str | None) -> str | None:
        return _require_match(value, _DOMAIN, "is not a domain name such as mg.example.com")

    @field_validator("ses_region")
    @classmethod
    def _ses_region(cls, value: str | None) -> str | None:
        return _require_match(value, _AWS_REGION, "is not an AWS region such as eu-west-1")

    @field_validator("ses_access_key_id")
    @classmethod
    def _ses_key_id(cls, value: str | None) -> str | None:
        return _require_match(
            value, _AWS_KEY_ID, "is not an AWS access key id (16-128 letters, digits or '_')"
        )

    @field_validator("ses_configuration_set")
    @classmethod
    def _ses_configuration_set(cls, value: str | None) -> str | None:
        return _require_match(
            value, _AWS_CONFIGURATION_SET, "must be 1-64 letters, digits, '_' or '-'"
        )

    @field_validator("sendgrid_webhook_public_key")
    @classmethod
    def _sendgrid_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # The webhook's own parser, so the setting accepts exactly what it will; without
        # the email extra nothing can verify webhooks anyway (add_email says so).
        with contextlib.suppress(MissingExtraError):
            from corestone.email.webhooks import SendGridWebhook

            SendGridWebhook(value)
        return value

    @field_serializer("email_providers")
    def _providers_as_typed(self, value: tuple[ProviderChoice, ...]) -> str:
        return format_providers(value)


def parse_providers(text: str) -> tuple[ProviderChoice, ...]:
    """Read ``EMAIL_PROVIDERS``; raise ValueError naming the rule a bad value breaks."""
    entries = [entry.strip() for entry in text.split(",")]
    if entries == [""]:
        return (ProviderChoice("file"),)
    choices: list[ProviderChoice] = []
    for position, entry in enumerate(entries, start=1):
        if not entry:
            raise ValueError(f"entry {position} is empty; expected names separated by commas")
        name, colon, weight = (part.strip() for part in entry.partition(":"))
        choice = ProviderChoice(_provider_name(name), _weight(name, weight) if colon else None)
        if any(seen.name == choice.name for seen in choices):
            raise ValueError(f"{choice.name} is listed twice; name each provider once")
        choices.append(choice)
    weighted = [choice.weight is not None for choice in choices]
    if any(weighted) and not all(weighted):
        raise ValueError(
            "mixes weighted and unweighted entries; give every provider a weight "
            "(smtp:3,sendgrid:1: weighted round-robin) or none (smtp,sendgrid: failover)"
        )
    return tuple(choices)


def format_providers(choices: Iterable[ProviderChoice]) -> str:
    """The value of ``EMAIL_PROVIDERS`` that reads back as ``choices``."""
    return ",".join(str(choice) for choice in choices)


def strategy_of(choices: Iterable[ProviderChoice]) -> Literal["failover", "weighted"]:
    """``weighted`` when the entries carry weights, else ``failover``."""
    return "weighted" if any(choice.weight is not None for choice in choices) else "failover"


def parse_rate_limits(text: str) -> dict[str, float]:
    """Read ``EMAIL_RATE_LIMITS`` (``name=messages per second``, comma-separated)."""
    limits: dict[str, float] = {}
    for position, entry in enumerate((entry.strip() for entry in text.split(",")), start=1):
        if not entry:
            if text.strip():
                raise ValueError(f"entry {position} is empty; expected name=messages per second")
            continue
        name, equals, rate = (part.strip() for part in entry.partition("="))
        if not equals:
            raise ValueError(f"entry {_show(entry)} has no '='; expected name=messages per second")
        name = _provider_name(name)
        if name in limits:
            raise ValueError(f"{name} is listed twice; give each provider one limit")
        limits[name] = _rate(name, rate)
    return limits


def _require_match(value: str | None, pattern: re.Pattern[str], problem: str) -> str | None:
    if value is not None and not pattern.fullmatch(value):
        raise ValueError(problem)
    return value


def _require_http(url: str) -> str:
    """An API base URL: ``http(s)://host[:port][/path]``, no user info, query or fragment."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError("is not a valid URL (a port must be a number)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http:// or https:// URL with a host")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ValueError("must be scheme://host[:port][/path], without user, query or fragment")
    return url


def _provider_name(text: str) -> str:
    name = text.lower()
    if name not in EMAIL_PROVIDER_NAMES:
        raise ValueError(
            f"{_show(text)} is not a provider; expected one of {', '.join(EMAIL_PROVIDER_NAMES)}"
        )
    return name


def _weight(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_WEIGHT:
        raise ValueError(
            f"{name}'s weight {_show(text)} is not a whole number from 1 to {MAX_WEIGHT}"
        )
    return int(text)


def _rate(name: str, text: str) -> float:
    try:
        rate = float(text) if text.isascii() else math.nan
    except ValueError:
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"{name}'s limit {_show(text)} is not a positive number of messages/s")
    return rate


def _show(text: str) -> str:
    """``text`` quoted and cut: an error line must stay one readable line."""
    shown = text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
    return repr(shown)
