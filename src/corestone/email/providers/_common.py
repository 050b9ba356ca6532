"""What the providers share: the wire form of a message, and how HTTP failures are classified.

Every provider answers the same two questions the delivery service asks of a failure:
*may it be tried again* and *how long should it wait*. HTTP providers answer them the
same way, so the rule lives here once: a transport error, a timeout, 408, 429 and every
5xx are retryable (with ``Retry-After`` when the provider sent one); any other 4xx is
permanent. A reason never carries a credential, only the status and the provider's
own words, cut short.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage as MimeMessage
from email.utils import parsedate_to_datetime
from typing import Final

from corestone.email.providers.base import Outgoing, Sent
from corestone.errors import EmailProviderError

__all__ = [
    "CORESTONE_ID_HEADER",
    "MAX_REASON",
    "check_message_id",
    "guard",
    "parse_retry_after",
    "send_each",
    "shorten",
    "status_error",
    "wire_mime",
]

CORESTONE_ID_HEADER: Final = "X-Corestone-Id"
MAX_REASON: Final = 300
_MESSAGE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
# What EmailMessage.build refuses too: every character str.splitlines() breaks at.
_LINE_BREAK: Final = re.compile(r"[\r\n\x00\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def shorten(text: str, limit: int = MAX_REASON) -> str:
    """One line of at most ``limit`` characters: reasons end up in logs and API answers."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def check_message_id(provider: str, message_id: str) -> str:
    """corestone's id goes into headers, tags and file names, so it must be a plain token.

    SES tags allow only ``A-Za-z0-9_-``, the strictest of the places it goes; an id the
    outbox never makes is refused permanently rather than mangled (a mangled id could
    no longer be mapped back from a delivery event).
    """
    if not _MESSAGE_ID.fullmatch(message_id):
        raise EmailProviderError(
            provider, "message id must be 1-128 of A-Z a-z 0-9 _ -", retryable=False
        )
    return message_id


def guard(provider: str, outgoing: Outgoing) -> str:
    """corestone's id, once the fields that become header lines are known to be one line.

    :meth:`EmailMessage.build` already refuses line breaks; this second look is for a
    message made some other way (the dataclass called directly), so that no provider can
    put a line break from a field on the wire, whatever the caller did.
    """
    message = outgoing.message
    lines = [
        message.subject,
        *(a.email for a in (message.sender, *message.recipients, *message.reply_to)),
        *(a.name for a in (message.sender, *message.recipients, *message.reply_to)),
        *message.headers,
        *message.headers.values(),
        *message.tags,
        *message.metadata,
        *message.metadata.values(),
        *(a.filename for a in message.attachments),
        *(a.content_type for a in message.attachments),
        *(a.content_id or "" for a in message.attachments),
    ]
    if any(_LINE_BREAK.search(str(v)) for v in lines):
        raise EmailProviderError(
            provider, "a header field contains a line break; refused", retryable=False
        )
    return check_message_id(provider, outgoing.message_id)


def wire_mime(provider: str, outgoing: Outgoing) -> MimeMessage:
    """The MIME message with corestone's id in ``Message-ID`` and ``X-Corestone-Id``.

    The ``Message-ID`` is derived from the id (``<id@sender-domain>``), so two attempts
    at one message carry the same ``Message-ID`` and a receiving system can tell them
    apart from two messages.
    """
    message_id = guard(provider, outgoing)
    try:
        domain = outgoing.message.sender.ascii_email.rpartition("@")[2]
        mime = outgoing.message.to_mime(message_id=f"<{message_id}@{domain}>")
    except (ValueError, TypeError, UnicodeError) as exc:  # the email package refused it
        raise EmailProviderError(
            provider, shorten(f"message cannot be encoded: {exc}"), retryable=False
        ) from None
    del mime[CORESTONE_ID_HEADER]  # a custom header of that name must not stand beside ours
    mime[CORESTONE_ID_HEADER] = message_id
    return mime


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, inf
        return None
    return max(0.0, seconds)


def status_error(
    provider: str, status: int, detail: str, *, retry_after: float | None = None
) -> EmailProviderError:
    """The error for an HTTP status the provider answered with (anything but success)."""
    retryable = status in (408, 429) or status >= 500
    return EmailProviderError(
        provider,
        shorten(f"HTTP {status}: {detail}" if detail else f"HTTP {status}"),
        retryable=retryable,
        retry_after=retry_after if retryable else None,
    )


async def send_each(
    batch: Sequence[Outgoing], send: Callable[[Outgoing], Awaitable[Sent]]
) -> list[Sent | EmailProviderError]:
    """A batch as one call per message, each message's outcome in its place."""
    outcomes: list[Sent | EmailProviderError] = []
    for outgoing in batch:
        try:
            outcomes.append(await send(outgoing))
        except EmailProviderError as exc:
            outcomes.append(exc)
    return outcomes
