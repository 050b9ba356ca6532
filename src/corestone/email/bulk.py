"""Bulk mail: one template, many recipients with their own merge data, stored in one go.

:meth:`EmailService.send_bulk <corestone.email.service.EmailService.send_bulk>` renders
the template once per recipient (in the sandbox of ``EmailTemplates``: a recipient's
values are data, never template code), adds the one-click unsubscribe
headers when asked, and stores one outbox row per recipient, all in one transaction and
with multi-row inserts, each tagged with the bulk's id. Per recipient, everything the
outbox guarantees still holds: exactly-once delivery, the suppression list (a suppressed
recipient's row is stored as ``suppressed`` and never sent), and an idempotency key
(``<key>:<digest of the address>`` when the bulk has a key, so sending the same bulk again stores
nothing new and returns the same id).

Everything is rendered and validated before anything is written: a recipient whose
address, data or rendered message breaks a rule fails the whole call with an
:class:`~corestone.errors.InvalidInputError` whose field names the recipient's index
(``recipients[3].to``, ``recipients[7].subject``), and nothing is stored.

Delivery is the sender's usual work: messages that share everything but their
recipient, subject, bodies and per-recipient headers go out in provider-native batches
(docs/email-providers.md), so a bulk send costs one provider request per chunk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, NewType, cast

from corestone._extras import requires_extra
from corestone.email._keys import check_keys_owned
from corestone.email.message import DEFAULT_LIMITS, Address, EmailLimits, EmailMessage
from corestone.email.outbox import (
    EmailEventRecord,
    EmailOutboxRecord,
    EmailStatus,
    OutboxStore,
)
from corestone.email.unsubscribe import UnsubscribeTokens, with_unsubscribe
from corestone.errors import InvalidInputError

if TYPE_CHECKING:
    from corestone.email.templates import EmailTemplates

with requires_extra(__name__, "postgres", "sqlite"):
    from sqlalchemy import Table, insert
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "MAX_BULK_RECIPIENTS",
    "BulkId",
    "BulkMail",
    "BulkStored",
    "Recipient",
    "UnsubscribeHeaders",
    "bulk_id_for",
    "recipient_key",
    "render_bulk",
    "store_bulk",
]

MAX_BULK_RECIPIENTS: Final = 10_000
"""Recipients of one ``send_bulk`` call: all are rendered, held and written in one
transaction, so a larger list is sent as several calls (each with its own key)."""

BulkId = NewType("BulkId", str)
"""The id every message of one bulk send carries (``corestone_email_outbox.bulk_id``)."""

Recipient = tuple[str | Address | tuple[str, str], Mapping[str, Any]]
"""One recipient: their address (``"a@b.org"``, ``("Name", "a@b.org")``) and merge data."""

_ROWS_PER_INSERT: Final = 500
"""Rows per execute: SQLAlchemy splits them into multi-row INSERTs that stay below each
database's bound-parameter limit; 500 keeps each round of RETURNING ids small."""
_ADDRESSES_PER_QUERY: Final = 1000
_MAX_KEY: Final = 200 - 17  # room for ":<16 hex digits>"
_BULK_NAMESPACE: Final = uuid.UUID("5b0c8a57-3d2e-4f4b-9a43-8f1f0d3c2b71")

_OUTBOX: Table = EmailOutboxRecord.__table__  # type: ignore[assignment]
_EVENTS: Table = EmailEventRecord.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class UnsubscribeHeaders:
    """Add RFC 8058 one-click unsubscribe headers, a token per recipient, for ``list_id``."""

    tokens: UnsubscribeTokens
    endpoint: str
    list_id: str


@dataclass(frozen=True, slots=True)
class BulkMail:
    """What every message of a bulk send shares: the sender and the message's extras."""

    sender: str | Address | tuple[str, str]
    reply_to: tuple[str | Address | tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    unsubscribe: UnsubscribeHeaders | None = None
    limits: EmailLimits = DEFAULT_LIMITS


@dataclass(frozen=True, slots=True)
class BulkStored:
    """What :func:`store_bulk` wrote: new rows queued, new rows suppressed."""

    queued: int
    suppressed: int


def bulk_id_for(idempotency_key: str | None, *, scope: str | None = None) -> BulkId:
    """A new id, or the one a key always gives: sending a bulk again answers the same id.

    ``scope`` (the workspace) is part of it: two workspaces using one key are two bulks.
    """
    if idempotency_key is None:
        return BulkId(str(uuid.uuid4()))
    named = idempotency_key if scope is None else f"{scope}\x00{idempotency_key}"
    return BulkId(str(uuid.uuid5(_BULK_NAMESPACE, named)))


def recipient_key(idempotency_key: str, email: str, *, scope: str | None = None) -> str:
    """One recipient's key: the bulk's, then a digest of the address (lower-cased).

    A digest and not the address: keys are at most 200 characters, addresses up to 320.
    ``scope`` (the workspace) is digested too: keys are unique across the whole outbox,
    so another workspace's bulk with the same key must not make this one's a no-op.
    """
    named = email.lower() if scope is None else f"{scope}\x00{email.lower()}"
    digest = hashlib.blake2b(named.encode(), digest_size=8).hexdigest()
    return f"{idempotency_key}:{digest}"


def _at(index: int, error: InvalidInputError) -> InvalidInputError:
    """``error`` with the recipient's index in front of its field."""
    where = f"recipients[{index}]"
    name = f"{where}.{error.field}" if error.field else where
    return InvalidInputError(f"{where}: {error.message}", field=name, rule=error.rule)


def render_bulk(
    templates: EmailTemplates,
    template: str,
    recipients: Iterable[Recipient],
    mail: BulkMail,
    *,
    idempotency_key: str | None = None,
    max_recipients: int = MAX_BULK_RECIPIENTS,
    key_scope: str | None = None,
) -> list[EmailMessage]:
    """One validated message per recipient; InvalidInputError naming the first bad one.

    A recipient is ``(address, data)``. The same address twice is refused (it is almost
    always a mistake in the list, and one address is one idempotency key).
    """
    if idempotency_key is not None and (
        not 1 <= len(idempotency_key) <= _MAX_KEY or not idempotency_key.isprintable()
    ):
        raise InvalidInputError(
            f"idempotency_key: must be 1-{_MAX_KEY} printable characters",
            field="idempotency_key",
            rule="length",
        )
    messages: list[EmailMessage] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(cast("Iterable[object]", recipients)):
        if index >= max_recipients:
            raise InvalidInputError(
                f"recipients: more than {max_recipients} in one call; split the list",
                field="recipients",
                rule="max_items",
            )
        if not isinstance(item, tuple) or len(item) != 2:  # typed, but a list from a file
            raise _at(index, InvalidInputError("must be (address, data)", rule="type"))
        address, data = item
        if not isinstance(data, Mapping):
            raise _at(index, InvalidInputError("must be a mapping", field="data", rule="type"))
        try:
            rendered = templates.render(template, data)
            message = EmailMessage.build(
                sender=mail.sender, to=[address], subject=rendered.subject, text=rendered.text,
                html=rendered.html, reply_to=mail.reply_to, headers=mail.headers,
                tags=mail.tags, metadata=mail.metadata, limits=mail.limits,
            )  # fmt: skip
            email = message.to[0].email.lower()
            first = seen.setdefault(email, index)
            if first != index:
                raise InvalidInputError(
                    f"to: {email} is also recipients[{first}]", field="to", rule="duplicate"
                )
            if idempotency_key is not None:  # built unkeyed: the address is known only now
                message = dataclasses.replace(
                    message, idempotency_key=recipient_key(idempotency_key, email, scope=key_scope)
                )
            if mail.unsubscribe is not None:
                options = mail.unsubscribe
                message = with_unsubscribe(
                    message, options.tokens, options.endpoint, list_id=options.list_id
                )
        except InvalidInputError as error:
            raise _at(index, error) from None
        messages.append(message)
    if not messages:
        raise InvalidInputError(
            "recipients: at least one is needed", field="recipients", rule="required"
        )
    return messages


async def store_bulk(
    store: OutboxStore,
    session: AsyncSession,
    messages: Sequence[EmailMessage],
    bulk_id: BulkId,
    *,
    workspace_id: int | None,
    correlation_id: str | None,
) -> BulkStored:
    """Store one row per message (each has one recipient) and its first event.

    Suppressed recipients are stored as ``suppressed``, the skip in their history. A row
    whose idempotency key is already stored is left out (``ON CONFLICT DO NOTHING``): a
    bulk sent again writes nothing for the recipients it already holds.
    """
    emails = [m.to[0].email.lower() for m in messages]
    suppressed: set[str] = set()
    for start in range(0, len(emails), _ADDRESSES_PER_QUERY):
        part = emails[start : start + _ADDRESSES_PER_QUERY]
        suppressed |= await store.suppressed_among(session, part)
    rows: list[dict[str, Any]] = []
    for message, email in zip(messages, emails, strict=True):
        status = EmailStatus.SUPPRESSED if email in suppressed else EmailStatus.QUEUED
        row = store.new_row(message.to_stored(), status, workspace_id, correlation_id)
        row["bulk_id"] = bulk_id
        rows.append(row)
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    written: set[str] = set()
    # One statement with many rows of parameters: SQLAlchemy sends it as multi-row
    # INSERTs ("insertmanyvalues", batches of rows per statement, compiled once).
    statement = (
        dialect.insert(_OUTBOX)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(_OUTBOX.c.id)
    )
    # In key order: two calls of one keyed bulk (a retry while the first is still open)
    # then wait for each other's keys in one order, never in a cycle (a deadlock).
    ordered = sorted(rows, key=lambda r: r["idempotency_key"] or "")
    for start in range(0, len(ordered), _ROWS_PER_INSERT):
        result = await session.execute(statement, ordered[start : start + _ROWS_PER_INSERT])
        written.update(str(r.id) for r in result)
    await check_keys_owned(
        session, [r["idempotency_key"] for r in rows if r["id"] not in written], workspace_id
    )
    events = [
        {
            "message_id": row["id"],
            "status": row["status"],
            "at": row["created_at"],
            "provider": None,
            "detail": None
            if row["status"] == EmailStatus.QUEUED.value
            else f"every recipient is suppressed: {email}",
        }
        for row, email in zip(rows, emails, strict=True)
        if row["id"] in written
    ]
    if events:
        await session.execute(insert(_EVENTS), events)
    skipped = sum(1 for e in events if e["status"] == EmailStatus.SUPPRESSED.value)
    return BulkStored(queued=len(events) - skipped, suppressed=skipped)
