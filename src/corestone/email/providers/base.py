"""What every email provider implements, and what it reports.

A provider only *sends*: it turns an :class:`~corestone.email.message.EmailMessage` into
its own API call and maps every failure onto :class:`~corestone.errors.EmailProviderError`
(retryable or permanent). Retries, failover, breakers, rate limits, idempotency checks and
status tracking belong to the delivery service, so each provider stays small and its
behaviour is the provider's documented one.

``message_id`` is corestone's id of the message (the outbox row's). Providers put it where
their webhooks give it back (SendGrid ``custom_args``, Mailgun ``v:`` variables, SES
message tags, the SMTP ``Message-ID``/``X-Corestone-Id`` headers), so delivery events can
be mapped back to the message, and pass the message's idempotency key to providers that
support one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from corestone.email.message import EmailMessage
from corestone.errors import EmailProviderError
from corestone.observability.health import CheckResult

__all__ = ["EmailProvider", "Outgoing", "Sent"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message handed to a provider, with corestone's id for it."""

    message_id: str
    message: EmailMessage


@dataclass(frozen=True, slots=True)
class Sent:
    """A provider accepted a message: which one, and the id it gave the message (if any)."""

    provider: str
    provider_message_id: str | None


@runtime_checkable
class EmailProvider(Protocol):
    """One way out: SMTP, SendGrid, Mailgun, SES, a folder of .eml files, memory."""

    name: str
    """Unique among the configured providers: breakers, rate limits and metrics use it."""
    max_batch: int
    """How many messages :meth:`send_batch` takes in one provider call (1: no native batch)."""

    async def send(self, outgoing: Outgoing) -> Sent:
        """Deliver one message, or raise EmailProviderError (retryable or permanent)."""
        ...

    async def send_batch(self, batch: Sequence[Outgoing]) -> list[Sent | EmailProviderError]:
        """Deliver up to ``max_batch`` messages, one outcome per message in order.

        A failure of the whole call is raised (every message has the same outcome); a
        per-message refusal is returned in its place.
        """
        ...

    async def check(self) -> CheckResult:
        """Health: can this provider be reached with its credentials, cheaply."""
        ...

    async def aclose(self) -> None:
        """Close pooled connections; called once at shutdown."""
        ...
