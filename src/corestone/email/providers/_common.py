"""What the providers share: the wire form of a message, HTTP failures, and batch plans.

Every provider answers the same two questions the delivery service asks of a failure:
*may it be tried again* and *how long should it wait*. HTTP providers answer them the
same way, so the rule lives here once: a transport error, a timeout, 408, 429 and every
5xx are retryable (with ``Retry-After`` when the provider sent one); any other 4xx is
permanent. A reason never carries a credential, only the status and the provider's
own words, cut short.

Batches: every provider with a native batch call groups a batch the same way
(:func:`plan_requests`): each message is checked on its own first (one bad message must
not sink the others), messages whose *shared part* is the same (the provider's key:
everything one request can only say once) go in one request, up to the provider's
recipient and size limits and never with one address twice; the rest go one request
each. :func:`send_planned` then makes the calls and puts each message's outcome in its
place; when the whole batch was one request its failure is raised, as the sender
expects of a call that failed as a whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage as MimeMessage
from email.utils import parsedate_to_datetime
from typing import Final

from corestone.email.message import EmailMessage
from corestone.email.providers.base import Outgoing, Sent
from corestone.errors import EmailProviderError

__all__ = [
    "CORESTONE_ID_HEADER",
    "MAX_REASON",
    "BatchPlan",
    "check_message_id",
    "guard",
    "parse_retry_after",
    "plan_requests",
    "send_each",
    "send_planned",
    "shared_key",
    "shorten",
    "status_error",
    "varying",
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


# -- batches ------------------------------------------------------------------------------

Outcome = Sent | EmailProviderError


def shared_key(message: EmailMessage, leave_out: Iterable[str], *extra: object) -> str:
    """The message without the fields in ``leave_out`` (and with ``extra``), as one string.

    Messages with equal keys can share one provider request: what differs between them
    is only what ``leave_out`` names, which the provider can say per recipient.
    """
    data = message.to_dict()
    for name in leave_out:
        data.pop(name)
    return json.dumps([data, *extra], sort_keys=True, separators=(",", ":"))


def varying(values: Sequence[str | None]) -> bool:
    """Whether the values differ (a part every message of a request shares is sent once)."""
    return any(v != values[0] for v in values[1:])


@dataclass(slots=True)
class _Group:
    members: list[int] = field(default_factory=list)
    recipients: int = 0
    size: int = 0
    addresses: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """The requests a batch becomes: indexes into the batch, one list per request."""

    requests: list[list[int]]
    refused: dict[int, EmailProviderError]
    """Messages refused before any request (``guard``), by index."""


def plan_requests(
    provider: str,
    batch: Sequence[Outgoing],
    key: Callable[[EmailMessage], str | None],
    *,
    max_recipients: int,
    max_size: int | None = None,
    size: Callable[[EmailMessage], int] = lambda _: 0,
) -> BatchPlan:
    """Group ``batch`` into provider requests; see the module docstring.

    ``key`` gives what a message shares with the others of its request (None: it goes
    alone). A request holds at most ``max_recipients`` recipients and ``max_size`` of
    ``size`` (the provider's per-request byte limit), and never one address twice: a
    message that would break one of these starts a new request of its key.
    """
    requests: list[list[int]] = []
    refused: dict[int, EmailProviderError] = {}
    open_groups: dict[str, _Group] = {}
    for index, outgoing in enumerate(batch):
        try:
            guard(provider, outgoing)
        except EmailProviderError as exc:
            refused[index] = exc
            continue
        message = outgoing.message
        shared = key(message)
        if shared is None:
            requests.append([index])
            continue
        addresses = {a.ascii_email.lower() for a in message.recipients}
        weight = size(message)
        group = open_groups.get(shared)
        if (
            group is None
            or group.recipients + len(message.recipients) > max_recipients
            or (max_size is not None and group.size + weight > max_size)
            or not group.addresses.isdisjoint(addresses)
        ):
            group = open_groups[shared] = _Group()
            requests.append(group.members)
        group.members.append(index)
        group.recipients += len(message.recipients)
        group.size += weight
        group.addresses |= addresses
    return BatchPlan(requests, refused)


async def send_planned(
    batch: Sequence[Outgoing],
    plan: BatchPlan,
    one: Callable[[Outgoing], Awaitable[Sent]],
    many: Callable[[list[Outgoing]], Awaitable[Sequence[Outcome]]],
) -> list[Outcome]:
    """Make the plan's requests in turn: ``one`` for a request of one message, else ``many``.

    ``many`` returns one outcome per message (a provider that reports per recipient
    fails only those). A request's failure is each of its messages' outcome, except when
    the batch was that one request: then it is raised.
    """
    whole = len(plan.requests) == 1 and not plan.refused
    outcomes: dict[int, Outcome] = dict(plan.refused)
    for members in plan.requests:
        try:
            if len(members) == 1:
                outcomes[members[0]] = await one(batch[members[0]])
            else:
                results = await many([batch[i] for i in members])
                outcomes.update(zip(members, results, strict=True))
        except EmailProviderError as exc:
            if whole:
                raise
            outcomes.update(dict.fromkeys(members, exc))
    return [outcomes[i] for i in range(len(batch))]
