"""``await email.send(message)``: hand a message over once, in the caller's transaction.

:class:`EmailService` only *stores*: the message goes into ``corestone_email_outbox``
(status ``queued``) in the same transaction as the caller's own writes, so a rolled-back
change sends nothing and a committed one cannot lose its email. An
:class:`~corestone.email.sender.EmailSender` delivers it afterwards, in this process or
another. Sending twice with the same idempotency key stores one message and returns its
id both times.

Recipients on the suppression list (hard bounces, complaints, manual entries) are left
out and the skip is recorded in the message's history; a message whose every ``to``
recipient is suppressed is stored as ``suppressed`` and never sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from corestone import context
from corestone.db.database import Database
from corestone.db.models import utc_now
from corestone.db.transactions import Transaction, current_transaction
from corestone.email._accept import store_unless_suppressed
from corestone.email.bulk import (
    MAX_BULK_RECIPIENTS,
    BulkId,
    BulkMail,
    BulkStored,
    Recipient,
    bulk_id_for,
    render_bulk,
    store_bulk,
)
from corestone.email.message import Address, EmailMessage
from corestone.email.outbox import EmailStatus, OutboxStore, SuppressionReason
from corestone.observability.logging import get_logger
from corestone.observability.metrics import Metrics

if TYPE_CHECKING:
    from corestone.email.templates import EmailTemplates

__all__ = ["MESSAGES_METRIC", "EmailService", "drop_recipients"]

log = get_logger(__name__)

MESSAGES_METRIC = ("email_messages_total", "Email messages by provider and outcome.")
"""sent, failed, retried, suppressed and unknown messages (the service counts suppressions)."""


def drop_recipients(message: EmailMessage, addresses: Collection[str]) -> EmailMessage | None:
    """``message`` without the recipients in ``addresses`` (lower-cased); None if no ``to`` is left.

    Without a ``to`` recipient the message has lost its purpose (a copy to cc alone
    would surprise everyone), so the whole message is skipped instead.
    """
    if not addresses:
        return message

    def keep(group: tuple[Address, ...]) -> tuple[Address, ...]:
        return tuple(a for a in group if a.email.lower() not in addresses)

    to = keep(message.to)
    if not to:
        return None
    return dataclasses.replace(message, to=to, cc=keep(message.cc), bcc=keep(message.bcc))


class EmailService:
    """Store messages for delivery; the application's one entry point for sending email.

    ``on_queued`` is called after a commit that queued a message (an in-process sender
    passes its ``wake`` so delivery starts at once instead of at its next poll).
    """

    def __init__(
        self,
        database: Database,
        *,
        metrics: Metrics | None = None,
        on_queued: Callable[[], None] | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.database = database
        self.store = OutboxStore(now=now)
        self.on_queued = on_queued
        self._counter = (
            None if metrics is None else metrics.counter(*MESSAGES_METRIC, ["provider", "outcome"])
        )

    async def send(
        self,
        message: EmailMessage,
        *,
        transaction: Transaction | None = None,
        workspace_id: int | None = None,
    ) -> str:
        """Store ``message`` for delivery and return its id.

        It is written in ``transaction`` when given, else in the transaction of this
        database open in the current context, else in a transaction of its own. An
        idempotency key already stored returns the stored message's id and writes
        nothing. ``workspace_id`` defaults to the workspace bound to the context; the
        context's correlation id is stored with the message.
        """
        tx = transaction
        if tx is None and (open_tx := current_transaction()) is not None:
            tx = open_tx if open_tx.database is self.database else None
        if tx is not None:
            return await self._store(tx, message, workspace_id)
        async with self.database.transaction() as own:
            return await self._store(own, message, workspace_id)

    async def _store(self, tx: Transaction, message: EmailMessage, workspace_id: int | None) -> str:
        session = tx.session
        workspace = workspace_id if workspace_id is not None else _context_workspace()
        stored = await store_unless_suppressed(
            self.store,
            session,
            message.to_stored(),
            [a.email for a in message.recipients],
            workspace_id=workspace,
            correlation_id=context.correlation_id(),
        )
        if isinstance(stored, str):  # the common case: no recipient suppressed, stored
            if self.on_queued is not None:
                tx.after_commit(self.on_queued)
            return stored
        suppressed = stored
        kept = drop_recipients(message, suppressed)
        status, detail = EmailStatus.QUEUED, None
        if kept is None:
            status, kept = EmailStatus.SUPPRESSED, message
            detail = "every recipient is suppressed: " + ", ".join(sorted(suppressed))
        elif suppressed:
            detail = "suppressed recipients left out: " + ", ".join(sorted(suppressed))
        message_id = await self.store.insert(
            session,
            kept.to_stored(),
            status=status,
            workspace_id=workspace,
            correlation_id=context.correlation_id(),
            detail=detail,
        )
        if status is EmailStatus.SUPPRESSED:
            tx.after_commit(self._count_suppressed)
        elif self.on_queued is not None:
            tx.after_commit(self.on_queued)
        return message_id

    def _count_suppressed(self, count: int = 1) -> None:
        if self._counter is not None and count:
            self._counter.labels(provider="none", outcome="suppressed").inc(count)

    async def send_bulk(
        self,
        templates: EmailTemplates,
        template: str,
        recipients: Iterable[Recipient],
        *,
        mail: BulkMail,
        idempotency_key: str | None = None,
        transaction: Transaction | None = None,
        workspace_id: int | None = None,
    ) -> BulkId:
        """Render ``template`` for each recipient and store one message each; the bulk's id.

        ``recipients`` are ``(address, merge data)`` pairs, at most
        :data:`~corestone.email.bulk.MAX_BULK_RECIPIENTS` a call. Every message is
        rendered and validated first (an InvalidInputError names the recipient's index and
        field, and nothing is stored), then all are written in one transaction (as
        :meth:`send` chooses it) with multi-row inserts. With ``idempotency_key`` each
        recipient's message is keyed by it and the address: sending the same bulk again
        stores nothing new and returns the same id. Progress: ``EmailTracker.bulk``.
        """
        workspace = workspace_id if workspace_id is not None else _context_workspace()
        scope = None if workspace is None else str(workspace)  # a key is per workspace
        messages = render_bulk(
            templates, template, recipients, mail, idempotency_key=idempotency_key,
            max_recipients=MAX_BULK_RECIPIENTS, key_scope=scope,
        )  # fmt: skip
        bulk_id = bulk_id_for(idempotency_key, scope=scope)
        tx = transaction
        if tx is None and (open_tx := current_transaction()) is not None:
            tx = open_tx if open_tx.database is self.database else None
        if tx is not None:
            await self._store_bulk(tx, messages, bulk_id, workspace)
        else:
            async with self.database.transaction() as own:
                await self._store_bulk(own, messages, bulk_id, workspace)
        return bulk_id

    async def _store_bulk(
        self, tx: Transaction, messages: list[EmailMessage], bulk_id: BulkId, workspace: int | None
    ) -> BulkStored:
        stored = await store_bulk(
            self.store, tx.session, messages, bulk_id,
            workspace_id=workspace if workspace is not None else _context_workspace(),
            correlation_id=context.correlation_id(),
        )  # fmt: skip
        if stored.suppressed:
            tx.after_commit(lambda: self._count_suppressed(stored.suppressed))
        if stored.queued and self.on_queued is not None:
            tx.after_commit(self.on_queued)
        return stored

    async def requeue(self, message_id: str, *, detail: str = "retried by an operator") -> bool:
        """Queue a ``failed`` or ``unknown`` message again; False if it is neither.

        For ``unknown`` (the sender died during the provider call) this accepts that the
        recipient may get a second copy: check the provider's logs first.
        """
        async with self.database.transaction() as tx:
            requeued = await self.store.requeue(tx.session, message_id, detail=detail)
            if requeued and self.on_queued is not None:
                tx.after_commit(self.on_queued)
        return requeued

    async def suppress(
        self, address: str, reason: SuppressionReason, *, detail: str | None = None
    ) -> None:
        """Put ``address`` on the suppression list: later sends to it are skipped."""
        async with self.database.transaction() as tx:
            await self.store.suppress(tx.session, address, reason, detail=detail)


def _context_workspace() -> int | None:
    value = context.workspace_id()
    return int(value) if value is not None and value.isdecimal() else None
